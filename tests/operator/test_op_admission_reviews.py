"""The webhooks' handlers with real AdmissionReviews (webhooks.respond, what the admission
server answers): plan authority on UPDATE, refusals with field paths, hostile input as
4xx, the GPUCapacityPolicy webhook, and the pure pod/policy rules behind them."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from opfixtures import make_profiles

from yolofit.estimator.identity import resolve_model
from yolofit.estimator.profile import ProfileStore
from yolofit.operator import feedback, isolation, launch, pod_rules, policy, ultralytics_args
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode, node_from_object
from yolofit.operator.webhooks import Snapshot, respond

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}
NODES = [FleetNode(f"t4-{i}", T4, 4) for i in range(4)] + [
    FleetNode(f"h100-{i}", H100, 8) for i in range(2)]
TEAM = {"namespace": "team-a", "allowedClasses": ["t4"], "maxGpusPerJob": 4,
        "maxGpusAdmitted": 4}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    d: Path = tmp_path_factory.mktemp("p")
    make_profiles(d, "yolov8n", fixed_gib=1.0, per_sample_mib=200)
    return ProfileStore(d, shipped=None)


def snapshot(store: ProfileStore, **policy_kw: Any) -> Snapshot:
    spec = policy.with_default_rule(GPUCapacityPolicySpec.model_validate(
        {"namespaces": [TEAM], **policy_kw}), policy.default_rule(16, 64))
    return Snapshot(policy=spec, classes=policy.effective_classes(spec, NODES), store=store)


def job(name: str = "j", ns: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 1, "perNode": 2},
                     **spec}}


def review(obj: Any, old: Any = None, op: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": op or ("UPDATE" if old else "CREATE"),
                        "object": obj, "oldObject": old,
                        "userInfo": {"username": "tenant"}}}


def answer(kind: str, snap: Snapshot, obj: Any, old: Any = None,
           op: str | None = None) -> dict[str, Any]:
    status, body = respond(kind, review(obj, old, op), snap)
    assert status == 200
    return dict(body["response"])


def mutated(snap: Snapshot, obj: dict[str, Any], old: Any = None) -> dict[str, Any]:
    """The object as the apiserver stores it after the mutating webhook's patch."""
    out = copy.deepcopy(obj)
    resp = answer("mutate", snap, obj, old)
    assert resp["allowed"] is True
    for op in json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else []:
        assert op["path"] == "/spec/plan"
        if op["op"] == "remove":
            del out["spec"]["plan"]
        else:
            out["spec"]["plan"] = op["value"]
    return out


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the operator leaves it once admitted: status.plan, spec.plan its mirror."""
    out = copy.deepcopy(obj)
    out["status"] = {"admitted": True, "phase": "Running", "plan": obj["spec"]["plan"]}
    return out


FORGED = {"gpuClass": "h100-80gb", "nodes": 2, "gpusPerNode": 8, "gpus": 1, "batchPerGpu": 64,
          "accumulate": 1, "amp": "bf16", "imgsz": 640}


# --- plan authority (issue 9 item 1; issue 14 webhook UPDATE paths) ------------------------

def test_create_gets_the_plan_and_a_forged_plan_on_create_is_replaced(store: ProfileStore) -> None:
    snap = snapshot(store)
    created = mutated(snap, job(plan=FORGED))
    assert created["spec"]["plan"]["gpuClass"] == "t4" and created["spec"]["plan"]["gpus"] == 2
    assert answer("validate", snap, created)["allowed"] is True


@pytest.mark.parametrize("state", ["queued", "admitted"])
def test_plan_only_patch_is_overwritten_and_refused(store: ProfileStore, state: str) -> None:
    snap = snapshot(store)
    old = mutated(snap, job())
    if state == "admitted":
        old = admitted(old)
    new = copy.deepcopy(old)
    new["spec"]["plan"] = FORGED  # the UPDATE changes spec.plan only
    # mutating: overwritten with yolofit's plan (the old one: nothing else changed)
    assert mutated(snap, new, old)["spec"]["plan"] == old["spec"]["plan"]
    # validating, where no mutating webhook ran first: refused, naming spec.plan
    resp = answer("validate", snap, new, old)
    assert resp["allowed"] is False and resp["status"]["code"] == 422
    assert "spec.plan" in resp["status"]["message"]


def test_a_plan_consistent_in_itself_but_not_admissions_is_refused(store: ProfileStore) -> None:
    snap = snapshot(store)
    old = mutated(snap, job())
    new = copy.deepcopy(old)
    new["spec"]["plan"] = {**old["spec"]["plan"], "batchPerGpu": 1, "accumulate": 32}
    resp = answer("validate", snap, new, old)
    assert resp["allowed"] is False and "spec.plan: written by yolofit" in resp["status"]["message"]


def test_a_margin_learned_between_mutate_and_validate_does_not_refuse_a_create(
        store: ProfileStore) -> None:
    """The two webhooks read two snapshots when an OOM is learned in between (seen on the
    sandbox): the job the mutating webhook planned must still be admitted."""
    from dataclasses import replace

    from yolofit.operator.feedback import margin_key

    before = snapshot(store)
    obj = mutated(before, job())
    after = replace(before, margins={margin_key("team-a", "yolov8n", obj["spec"]["plan"][
        "gpuClass"]): 0.5})
    assert answer("mutate", after, job())["patch"] != answer("mutate", before, job())["patch"]
    assert answer("validate", after, obj)["allowed"] is True


def test_plan_that_breaks_the_policy_names_the_rule(store: ProfileStore) -> None:
    snap = snapshot(store)
    new = job(plan=FORGED)
    msg = answer("validate", snap, new)["status"]["message"]
    assert "spec.plan.gpus: 1 is not nodes x gpusPerNode = 2 x 8" in msg
    assert "spec.plan.gpuClass: 'h100-80gb' is not a class namespace team-a may use" in msg


def test_clearing_a_user_written_plan(store: ProfileStore) -> None:
    """A spec that no longer plans (e.g. an unknown class) loses the plan a user wrote."""
    snap = snapshot(store)
    obj = job(gpuClass="nope", plan=FORGED)
    resp = answer("mutate", snap, obj)
    assert json.loads(base64.b64decode(resp["patch"])) == [{"op": "remove",
                                                            "path": "/spec/plan"}]


def test_changes_to_an_admitted_job_are_refused(store: ProfileStore) -> None:
    snap = snapshot(store)
    old = admitted(mutated(snap, job()))
    for change in ({"imgsz": 320}, {"image": "evil.example/x:1"}, {"args": {"lr0": 0.1}}):
        new = copy.deepcopy(old)
        new["spec"].update(change)
        resp = answer("validate", snap, mutated(snap, new, old), old)
        assert resp["allowed"] is False and "the job is admitted" in resp["status"]["message"]
    # the operator's own mirror of a re-plan (status.plan changed first) is accepted
    replanned = copy.deepcopy(old)
    replanned["status"]["plan"] = {**old["spec"]["plan"], "batchPerGpu": 4, "accumulate": 8}
    new = copy.deepcopy(replanned)
    new["spec"]["plan"] = replanned["status"]["plan"]
    assert answer("validate", snap, new, replanned)["allowed"] is True


def test_queued_job_spec_change_gets_a_fresh_plan(store: ProfileStore) -> None:
    snap = snapshot(store)
    old = mutated(snap, job())
    new = copy.deepcopy(old)
    new["spec"]["gpus"] = {"nodes": 1, "perNode": 4}
    out = mutated(snap, new, old)
    assert out["spec"]["plan"]["gpus"] == 4
    assert answer("validate", snap, out, old)["allowed"] is True


# --- refusals with field paths (issue 14) --------------------------------------------------

@pytest.mark.parametrize(("obj", "fragment"), [
    (job(name="x" * 49), "metadata.name: at most 48 characters"),
    (job(gpus={"nodes": 2, "perNode": 4}), "spec.gpus: 8 GPUs can never be admitted in "
                                           "namespace team-a (at most 4 GPUs at once)"),
    (job(gpus={"nodes": 1, "perNode": 8}, ns="other"), None),  # default rule: allowed
    (job(gpus={"nodes": 4, "perNode": 8}, ns="other"),
     "exceeds the 16 GPUs per job allowed in namespace other"),
    (job(gpuClass="h100-80gb"), "spec.gpuClass: class 'h100-80gb' is not allowed in namespace "
                                "team-a (allowed: t4)"),
    (job(model="yolov99z"), "spec: unknown model 'yolov99z'"),
    (job(imgsz=33), "spec.imgsz: "),
    (job(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
     "spec.volumes[0].hostPath: volume type hostPath is not allowed in namespace team-a: "
     "GPUCapacityPolicy spec.pods.allowedVolumeTypes permits persistentVolumeClaim, "
     "configMap, emptyDir, csi"),
    (job(volumes=[{"name": "s", "secret": {"secretName": "x"}}]),
     "spec.volumes[0].secret: volume type secret is not allowed"),
    (job(volumes=[{"name": "p", "persistentVolumeClaim": {"claimName": "data"}}]), None),
    (job(args={f"k{i}": i for i in range(50_000)}),
     "spec.args: 50000 arguments; at most 200"),
    (job(model="yolo11n-seg", args={"mask_ratio": 1}), "spec.args.mask_ratio: 1 makes the "
     "segment loss's masks 16x larger than yolofit's profiles are traced at"),
    (job(model="yolo11n-seg", args={"overlap_mask": False}), "spec.args.overlap_mask: false"),
    (job(args={"mask_ratio": 1}), None),  # detection: Ultralytics ignores it
    (job(model="/data/runs/best.pt"), "spec.model: best.pt names no architecture; set "
     "spec.model to the architecture (e.g. yolo11m) and spec.weights: /data/runs/best.pt"),
    (job(weights="/data/runs/best.pt"), "spec.weights: /data/runs/best.pt is not under any "
     "of spec.volumeMounts"),
    (job(weights="/data/runs/best.pt",
         volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
         volumeMounts=[{"name": "d", "mountPath": "/data"}]), None),
])
def test_refusals_name_the_field(store: ProfileStore, obj: dict[str, Any],
                                 fragment: str | None) -> None:
    resp = answer("validate", snapshot(store), obj)
    if fragment is None:
        assert resp["allowed"] is True, resp
    else:
        assert resp["allowed"] is False and 400 <= resp["status"]["code"] < 500
        assert fragment in resp["status"]["message"], resp["status"]["message"]


def test_no_class_allowed(store: ProfileStore) -> None:
    snap = snapshot(store, namespaces=[{**TEAM, "allowedClasses": ["a100-80gb"]}])
    msg = answer("validate", snap, job())["status"]["message"]
    assert "spec.gpuClass: namespace team-a may use no GPU class of the fleet" in msg


def test_disallowed_image_names_the_rule(store: ProfileStore) -> None:
    snap = snapshot(store, pods={"allowedImagePrefixes": ["registry.example.com/ml/"]})
    msg = answer("validate", snap, job(image="docker.io/evil/miner"))["status"]["message"]
    assert msg.startswith("spec.image: 'docker.io/evil/miner' is not allowed: "
                          "GPUCapacityPolicy spec.pods.allowedImagePrefixes")
    ok = answer("validate", snap, job(image="registry.example.com/ml/trainer:1"))
    assert ok["allowed"] is True
    # a namespace rule's own pod rules replace the policy's (per-namespace defaults)
    snap = snapshot(store, namespaces=[{**TEAM, "pods": {"allowedVolumeTypes": ["secret"]}}])
    assert answer("validate", snap, job(volumes=[{"name": "s", "secret": {}}]))["allowed"]
    msg = answer("validate", snap, job(volumes=[{"name": "e", "emptyDir": {}}]))
    assert "GPUCapacityPolicy spec.namespaces[0].pods.allowedVolumeTypes" in \
        msg["status"]["message"]


def test_imgsz_33_on_update_is_a_422_naming_spec_imgsz(store: ProfileStore) -> None:
    snap = snapshot(store)
    old = mutated(snap, job())
    new = copy.deepcopy(old)
    new["spec"]["imgsz"] = 33
    resp = answer("validate", snap, mutated(snap, new, old), old)
    assert resp["status"]["code"] == 422 and resp["status"]["message"].startswith("spec.imgsz:")


@pytest.mark.parametrize(("body", "code", "fragment"), [
    ({**job(), "spec": "junk"}, 400, "spec: must be an object, got str"),
    ({**job(), "spec": [1, 2]}, 400, "spec: must be an object, got list"),
    ({**job(), "spec": None}, 400, "spec: must be an object"),
    (job(gpus="eight"), 422, "spec.gpus: "),
    (job(classes=-1), 422, "spec.classes: "),
    (job(volumes=[{"name": "x"}]), 422, "spec.volumes[0]: a volume needs a name and exactly "
                                        "one source"),
    (job(model="/proc/self/root/nonexistent/model.yaml"), 422, "spec"),
    (job(model="/etc/shadow.yaml"), 422, "spec"),
])
def test_malformed_input_is_4xx_with_the_field(store: ProfileStore, body: Any, code: int,
                                               fragment: str) -> None:
    resp = answer("validate", snapshot(store), body)
    assert resp["allowed"] is False and resp["status"]["code"] == code
    assert fragment in resp["status"]["message"]
    assert answer("mutate", snapshot(store), body)["allowed"] is True  # mutate never refuses


def test_50000_key_args_are_refused_before_per_key_work(store: ProfileStore) -> None:
    big = review(job(args={f"unknown_key_{i}": i for i in range(50_000)}))
    started = time.process_time()
    status, body = respond("validate", big, snapshot(store))
    mutate_status, mutate_body = respond("mutate", big, snapshot(store))
    spent = time.process_time() - started
    assert body["response"]["status"]["message"] == "spec.args: 50000 arguments; at most 200 " \
        f"(Ultralytics has about {len(ultralytics_args.known_args())} train arguments)"
    assert mutate_body["response"]["allowed"] is True and "patch" not in mutate_body["response"]
    print(f"50,000-key args: {spent * 1000:.0f} ms CPU for both webhooks")  # reported, not asserted


def test_not_an_admission_review_is_a_400(store: ProfileStore) -> None:
    for junk in (None, [], "x", {"request": 1}):
        status, _ = respond("validate", junk, snapshot(store))
        assert status == 400


# --- GPUCapacityPolicy webhook (issue 9 item 4) --------------------------------------------

@pytest.mark.parametrize(("spec", "fragment"), [
    ({"classes": [{"name": "a100-80gb", "memory": "80 gigs"}]},
     "spec.classes[0].memory: '80 gigs' is not a size"),
    ({"classes": [{"name": "t4", "memory": "16GiB", "usableMemory": "20GiB"}]},
     "spec.classes[0].usableMemory: larger than memory"),
    ({"classes": [{"name": "t4"}], "preference": ["h100"]},
     "spec.preference[0]: 'h100' is not a class of spec.classes"),
    ({"namespaces": [{"namespace": "a", "maxGpusAdmitted": -1}]},
     "spec.namespaces[0].maxGpusAdmitted: "),
    ({"namespaces": [{"namespace": "a"}, {"namespace": "a"}]}, "one rule per namespace"),
    ({"defaultObjectsPerImage": 10}, "spec.defaultMeanObjectsPerImage: 16 is above "
     "spec.defaultObjectsPerImage (10); a mean cannot exceed the densest image"),
    ({"defaultObjectsPerImage": 10, "defaultMeanObjectsPerImage": 10}, None),
    ("junk", "spec: must be an object"),
    ({"classes": [{"name": "t4", "memory": "16GiB"}], "preference": ["t4"]}, None),
])
def test_policy_webhook(spec: Any, fragment: str | None) -> None:
    obj = {"apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
           "metadata": {"name": "default"}, "spec": spec}
    status, body = respond("validate-policy", review(obj), snapshot_empty())
    resp = body["response"]
    if fragment is None:
        assert resp["allowed"] is True, resp
    else:
        assert resp["allowed"] is False and resp["status"]["code"] == 422
        assert fragment in resp["status"]["message"]


def snapshot_empty() -> Snapshot:
    return Snapshot(policy=GPUCapacityPolicySpec(), classes={},
                    store=ProfileStore(Path("/nonexistent"), shipped=None))


# --- broken inputs skipped, never stopping admission ---------------------------------------

def test_a_bad_class_a_bad_node_label_and_a_broken_margin_are_skipped() -> None:
    spec = GPUCapacityPolicySpec.model_validate({"classes": [
        {"name": "a100-80gb", "memory": "80 gigs"}, {"name": "t4"}]})
    assert list(policy.effective_classes(spec, NODES)) == ["t4"]
    bad = {"metadata": {"name": "n", "labels": {**T4, "nvidia.com/gpu.count": "eight"}}}
    assert node_from_object(bad) is None
    data = {feedback.MARGINS_KEY: json.dumps({"n|a|t4": {"margin": None}, "n|b|t4": None,
                                              "n|c|t4": {"margin": "x"},
                                              "n|d|t4": {"margin": 0.2},
                                              "n|e|t4": {"margin": 1e999}})}
    assert feedback.decode_margins(data) == {"n|d|t4": {"margin": 0.2, "observations": 0,
                                                        "seen": []}}


def test_deleted_policy_fails_closed_to_the_default_rule() -> None:
    p = policy.with_default_rule(GPUCapacityPolicySpec(), policy.default_rule(16, 64))
    rule = policy.namespace_rule(p, "anyone")
    assert rule is not None and (rule.max_gpus_per_job, rule.max_gpus_admitted) == (16, 64)
    assert not policy.quota_allows(rule, 60, 8)
    explicit = GPUCapacityPolicySpec.model_validate({"namespaces": [{"namespace": "*"}]})
    assert policy.with_default_rule(explicit, policy.default_rule(16, 64)) is explicit


# --- pods a platform team can accept --------------------------------------------------------

def test_trainer_pods_meet_pod_security_restricted() -> None:
    body = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    spec = YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml"})
    plan = Plan(gpu_class="t4", nodes=1, gpus_per_node=1, gpus=1, batch_per_gpu=8,
                accumulate=8, amp="fp16", imgsz=640)
    pod = launch.build_pod(body, spec, plan, 0, 0, {}, [])
    ps, (c,) = pod["spec"], pod["spec"]["containers"]
    assert ps["automountServiceAccountToken"] is False
    assert ps["serviceAccountName"] == isolation.service_account("ns")["metadata"]["name"]
    assert ps["securityContext"]["runAsNonRoot"] is True
    assert ps["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_network_policy_admits_only_the_jobs_pods_and_monitoring() -> None:
    body = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    np = isolation.network_policy(body, "monitoring")
    assert np["metadata"]["name"] == "j-ddp"
    assert np["metadata"]["ownerReferences"][0]["uid"] == "u"
    peers, metrics = np["spec"]["ingress"]
    assert peers == {"from": [{"podSelector": {"matchLabels": {"yolofit.io/job": "j"}}}]}
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert metrics["ports"][0]["port"] == launch.METRICS_PORT


def test_volume_type() -> None:
    assert pod_rules.volume_type({"name": "x", "csi": {}}) == "csi"
    assert pod_rules.volume_type({"name": "x"}) is None
    assert pod_rules.volume_type({"name": "x", "csi": {}, "hostPath": {}}) is None


def test_a_model_path_the_operator_cannot_read_is_a_422(store: ProfileStore,
                                                        tmp_path: Path) -> None:
    unreadable = tmp_path / "custom.yaml"
    unreadable.mkdir()  # reading it raises IsADirectoryError (root ignores permission bits)
    snap = snapshot(store, modelDirs=[str(tmp_path)])
    resp = answer("validate", snap, job(model=str(unreadable)))
    assert resp["allowed"] is False and resp["status"]["code"] == 422
    message = resp["status"]["message"]  # (inside modelDirs: read, and it is no model)
    assert message.startswith("spec") and "modelDirs" not in message, message


def test_admission_reads_no_model_file_outside_the_policys_model_dirs(
        store: ProfileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant names any path in spec.model: outside policy.modelDirs (none by default)
    the operator neither reads it nor says whether it exists; '..' and symlinks do not lead
    out; a custom YAML inside is read and planned (here: traced first, as any new model)."""
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    elsewhere.mkdir()
    shipped = resolve_model("yolov8n").path
    assert shipped is not None
    for d in (models, elsewhere):
        (d / "custom.yaml").write_text(shipped.read_text())
    (models / "link.yaml").symlink_to(elsewhere / "custom.yaml")
    snap = snapshot(store, modelDirs=[str(models)])
    for model in (elsewhere / "custom.yaml", elsewhere / "none.yaml", models / "link.yaml",
                  f"{models}/../elsewhere/custom.yaml", "models/custom.yaml"):
        resp = answer("validate", snap, job(model=str(model)))
        message = resp["status"]["message"]
        assert resp["allowed"] is False and message.startswith(
            f"spec.model: {model} is not a shipped architecture"), message
        assert f"modelDirs ({models})" in message
    resp = answer("validate", snapshot(store), job(model=str(elsewhere / "custom.yaml")))
    assert "modelDirs (none configured)" in resp["status"]["message"]
    monkeypatch.chdir(elsewhere)  # a bare name is no file of the operator's working directory
    message = answer("validate", snap, job(model="custom.yaml"))["status"]["message"]
    assert message.startswith("spec: unknown model 'custom.yaml': not a shipped "
                              "architecture") and f"modelDirs ({models})" in message, message
    obj = mutated(snap, job(model=str(models / "custom.yaml")))
    status = answer("validate", snap, obj)
    assert status["allowed"] is True, status
    assert "plan" not in obj["spec"]  # no profile of "custom" yet: Profiling, then traced
