"""Admission that cannot be escaped, tried on the real sandbox as a tenant would (issue 9):
a tenant (`kubectl --as`, bound to a Role on yolotrainingjobs incl. status) against the
operator with its webhooks and status policy registered.

Each test reproduces one escape of the issue's list and checks it is closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from yolofit.sandbox.testing import wait_for

pytestmark = pytest.mark.integration
TENANT = "tenant@example.com"
FORGED = {"gpuClass": "h100-80gb", "nodes": 2, "gpusPerNode": 8, "gpus": 1, "batchPerGpu": 64,
          "accumulate": 1, "amp": "bf16", "imgsz": 640}


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    """The operator with small default limits, so failing closed is visible on 9 nodes."""
    return {"YOLOFIT_OPERATOR_DEFAULT_MAX_GPUS_PER_JOB": "4",
            "YOLOFIT_OPERATOR_DEFAULT_MAX_GPUS_ADMITTED": "8"}


@pytest.fixture
def tenant(kubectl: Callable[..., Any], namespace: str) -> Callable[..., Any]:
    """kubectl as a tenant who may do anything to YOLOTrainingJobs (status included) in the
    namespace, and nothing else."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "ytj-all", "namespace": namespace},
            "rules": [{"apiGroups": ["yolofit.io"],
                       "resources": ["yolotrainingjobs", "yolotrainingjobs/status"],
                       "verbs": ["*"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "ytj-all", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "ytj-all"},
               "subjects": [{"kind": "User", "name": TENANT,
                             "apiGroup": "rbac.authorization.k8s.io"}]}
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": [role, binding]}))

    def run(*args: str, **kw: Any) -> Any:
        return kubectl(f"--as={TENANT}", "-n", namespace, *args, **kw)
    return run


def job(name: str, namespace: str, nodes: int = 1, per_node: int = 1,
        **spec: Any) -> str:
    return json.dumps({
        "apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": "yolov8n", "data": "/data/coco8.yaml",
                 "gpus": {"nodes": nodes, "perNode": per_node}, **spec}})


def get(kubectl: Callable[..., Any], ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "ytj", "-n", ns, name, "-o", "json").stdout))


def phase(kubectl: Callable[..., Any], ns: str, name: str, want: str) -> Callable[[], Any]:
    def check() -> Any:
        body = get(kubectl, ns, name)
        return body if (body.get("status") or {}).get("phase") == want else None
    return check


def is_admitted(kubectl: Callable[..., Any], ns: str, name: str) -> Callable[[], Any]:
    def check() -> Any:
        body = get(kubectl, ns, name)
        return body if (body.get("status") or {}).get("admitted") is True else None
    return check


def pods(kube: Any, ns: str, name: str) -> list[Any]:
    return list(kube.list_namespaced_pod(ns, label_selector=f"yolofit.io/job={name}").items)


def test_a_plan_patch_is_overwritten_and_never_launched(
        operator: Any, kubectl: Any, kube: Any, namespace: str, tenant: Any,
        policy: Callable[..., None]) -> None:
    policy([{"namespace": namespace, "allowedClasses": ["t4"], "maxGpusAdmitted": 1}])
    tenant("apply", "-f", "-", input=job("first", namespace))
    wait_for(is_admitted(kubectl, namespace, "first"), 60, what="first admitted")
    tenant("apply", "-f", "-", input=job("second", namespace))
    wait_for(phase(kubectl, namespace, "second", "Queued"), 60, what="second queued")
    # The patch of the issue: only spec.plan, a 16-GPU H100 plan counted as 1 GPU.
    result = tenant("patch", "ytj", "second", "--type=merge", "-p",
                    json.dumps({"spec": {"plan": FORGED}}), check=False)
    body = get(kubectl, namespace, "second")
    assert body["spec"]["plan"]["gpuClass"] == "t4", (result.stderr, body["spec"]["plan"])
    assert body["spec"]["plan"]["gpus"] == 1
    kubectl("delete", "ytj", "first", "-n", namespace, "--wait=true", "--timeout=60s")
    admitted = wait_for(is_admitted(kubectl, namespace, "second"), 60,
                        what="second admitted once the first is gone")
    assert admitted["status"]["plan"]["gpuClass"] == "t4"
    launched = wait_for(lambda: pods(kube, namespace, "second") or None, 60, what="pods")
    assert [p.spec.node_selector for p in launched] == [
        {"nvidia.com/gpu.product": "Tesla-T4"}]
    assert launched[0].spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


def test_status_is_written_by_the_operator_only(operator: Any, kubectl: Any,
                                                namespace: str, tenant: Any) -> None:
    tenant("apply", "-f", "-", input=job("mine", namespace))
    wait_for(is_admitted(kubectl, namespace, "mine"), 60, what="admitted")
    for status in ({"admitted": False}, {"phase": "Succeeded"},
                   {"plan": FORGED}):
        result = tenant("patch", "ytj", "mine", "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": status}), check=False)
        assert result.returncode != 0, status
        assert "written by the yolofit operator only" in result.stderr, result.stderr
    assert tenant("auth", "can-i", "patch", "yolotrainingjobs", "--subresource=status",
                  check=False).stdout.strip() == "yes"  # RBAC allows it; the policy does not
    assert get(kubectl, namespace, "mine")["status"]["admitted"] is True


@pytest.mark.parametrize(("spec", "fragments"), [
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
     ["spec.volumes[0].hostPath", "GPUCapacityPolicy spec.pods.allowedVolumeTypes"]),
    ({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]},
     ["spec.volumes[0].secret", "allowedVolumeTypes"]),
    ({"image": "docker.io/evil/miner:1"},
     ["spec.image", "GPUCapacityPolicy spec.pods.allowedImagePrefixes"]),
])
def test_pod_escapes_are_refused_naming_the_rule(operator: Any, kubectl: Any, namespace: str,
                                                 tenant: Any, policy: Callable[..., None],
                                                 spec: dict[str, Any],
                                                 fragments: list[str]) -> None:
    policy([{"namespace": "*"}], pods={"allowedImagePrefixes": ["ghcr.io/yolofit/"]})
    result = tenant("apply", "-f", "-", input=job("escape", namespace, **spec), check=False)
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_hostile_args_and_out_of_range_updates_are_4xx(operator: Any, kubectl: Any,
                                                       namespace: str, tenant: Any) -> None:
    args = {f"junk_{i}": i for i in range(50_000)}
    result = tenant("create", "-f", "-", input=job("junk", namespace, args=args), check=False)
    assert result.returncode != 0
    assert "spec.args: 50000 arguments; at most 200" in result.stderr, result.stderr[-2000:]
    latency = json.loads(urlopen(f"http://127.0.0.1:{operator.health_port}"
                                 "/debug/webhook-latency"))
    print(f"admission handling max {latency.get('max_ms')} ms over {latency.get('count')} "
          f"reviews (50,000-key args included)")

    tenant("apply", "-f", "-", input=job("ok", namespace))
    result = tenant("patch", "ytj", "ok", "--type=merge", "-p", '{"spec":{"imgsz":33}}',
                    check=False)
    assert result.returncode != 0 and "spec.imgsz" in result.stderr, result.stderr
    assert "nternal" not in result.stderr and "500" not in result.stderr
    result = tenant("patch", "ytj", "ok", "--type=merge", "-p", '{"spec":"junk"}', check=False)
    assert result.returncode != 0 and "spec" in result.stderr and "500" not in result.stderr
    assert _errors(operator.metrics()) == 0  # every answer a 4xx: the alert stays quiet


def _errors(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("yolofit_webhook_requests_total{") and 'result="error"' in line)


def urlopen(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_a_bad_policy_is_refused_at_apply(operator: Any, kubectl: Any) -> None:
    bad = {"apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
           "metadata": {"name": "default"},
           "spec": {"classes": [{"name": "a100-80gb", "memory": "80 gigs"}]}}
    result = kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.classes[0].memory: '80 gigs' is not a size" in result.stderr, result.stderr


def test_policy_deletion_fails_closed(operator: Any, kubectl: Any, namespace: str,
                                      tenant: Any, policy: Callable[..., None]) -> None:
    policy([{"namespace": "*"}])  # explicit: no limits anywhere
    eight = job("eight", namespace, nodes=2, per_node=4)
    assert tenant("apply", "--dry-run=server", "-f", "-", input=eight).returncode == 0
    kubectl("delete", "gpucapacitypolicy", "default")

    def refused() -> Any:
        r = tenant("apply", "--dry-run=server", "-f", "-", input=eight, check=False)
        return r.stderr if r.returncode != 0 else None
    msg = wait_for(refused, 30, what="the default rule after the policy is deleted")
    assert f"exceeds the 4 GPUs per job allowed in namespace {namespace}" in msg, msg


def test_trainer_pods_are_admitted_under_pod_security_restricted(
        operator: Any, kubectl: Any, kube: Any, namespace: str, tenant: Any) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    tenant("apply", "-f", "-", input=job("pss", namespace, nodes=2))
    created = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(
        pods(kube, namespace, "pss")), 60, what="both pods created under restricted")
    for pod in created:
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.service_account_name == "yolofit-trainer"
    sa = kube.read_namespaced_service_account("yolofit-trainer", namespace)
    assert sa.automount_service_account_token is False
    netpol = json.loads(kubectl("get", "networkpolicy", "pss-ddp", "-n", namespace, "-o",
                                "json").stdout)
    assert netpol["metadata"]["ownerReferences"][0]["name"] == "pss"
    log = operator.log_path.read_text(errors="replace")
    assert "violates PodSecurity" not in log


def test_a_job_with_weights_is_planned_from_its_architecture(
        operator: Any, kubectl: Any, kube: Any, namespace: str, tenant: Any,
        policy: Callable[..., None]) -> None:
    """Issue 11 item 4 on the real apiserver: spec.weights survives the CRD schema, the job
    is planned from spec.model (never Profiling for its checkpoint's name) and the pods get
    the checkpoint; a .pt whose name implies no architecture is refused at apply."""
    policy([{"namespace": namespace, "allowedClasses": ["t4"]}])
    vol = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
           "volumeMounts": [{"name": "d", "mountPath": "/data"}]}
    refused = tenant("apply", "-f", "-", check=False,
                     input=job("bare", namespace, model="/data/runs/best.pt", **vol))
    assert refused.returncode != 0
    assert ("spec.model: best.pt names no architecture; set spec.model to the architecture "
            "(e.g. yolo11m) and spec.weights: /data/runs/best.pt") in refused.stderr
    tenant("apply", "-f", "-", input=job("tuned", namespace, weights="/data/runs/best.pt",
                                         **vol))
    body = get(kubectl, namespace, "tuned")
    assert body["spec"]["weights"] == "/data/runs/best.pt"
    assert body["spec"]["plan"]["profile"].startswith("yolov8n"), body["spec"]["plan"]
    wait_for(is_admitted(kubectl, namespace, "tuned"), 60, what="admitted")
    launched = wait_for(lambda: pods(kube, namespace, "tuned") or None, 60, what="pods")
    env = {e.name: e.value for e in launched[0].spec.containers[0].env}
    config = json.loads(env["YOLOFIT_TRAIN_CONFIG"])
    assert (config["model"], config["weights"]) == ("yolov8n.yaml", "/data/runs/best.pt")
