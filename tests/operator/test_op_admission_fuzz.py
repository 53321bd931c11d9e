"""Property test: 10,000 generated AdmissionReviews through the real webhook handlers
(webhooks.respond, what the admission server answers): wrong types, huge, negative and
unicode values, nested junk, UPDATEs of queued and admitted jobs, forged plans.

Claims: no review is answered with a 5xx; every denial names a field (spec.* or
metadata.*); mutate and validate agree with the reconciler's decision (admission.decide on
the same spec): the mutated plan is decide's plan, validate allows exactly what decide
plans or sends to Profiling, and what validate allowed after mutation stays allowed.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opfixtures import make_profiles
from pydantic import ValidationError

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, policy
from yolofit.operator.api import GPUCapacityPolicySpec, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode
from yolofit.operator.webhooks import Snapshot, respond

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}
NODES = [FleetNode(f"t4-{i}", T4, 4) for i in range(4)] + [
    FleetNode(f"h100-{i}", H100, 8) for i in range(2)]
FIELD = re.compile(r"(^|; )(spec|metadata|object)[.\[:]")
EXAMPLES = 10_000
SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    d = tmp_path_factory.mktemp("p")
    make_profiles(d, "yolov8n", fixed_gib=1.0, per_sample_mib=200)
    spec = policy.with_default_rule(GPUCapacityPolicySpec.model_validate({"namespaces": [
        {"namespace": "team-a", "allowedClasses": ["t4"], "maxGpusPerJob": 8,
         "maxGpusAdmitted": 8}], "pods": {"allowedImagePrefixes": ["ghcr.io/yolofit/"]}}),
        policy.default_rule(16, 64))
    return Snapshot(policy=spec, classes=policy.effective_classes(spec, NODES),
                    store=ProfileStore(d, shipped=None))


junk = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

GOOD: dict[str, Any] = {
    "model": st.sampled_from(["yolov8n", "yolov8s", "yolov8n.pt", "nope", "/etc/x.yaml", "ü"]),
    "data": st.sampled_from(["/d.yaml", ""]),
    "classes": st.sampled_from([80, 1, 0, 100001]),
    "imgsz": st.sampled_from([640, 320, 33, 4096, 8192]),
    "nbs": st.sampled_from([64, 1, 0, 48]),
    "amp": st.sampled_from(["auto", "bf16", "fp8"]),
    "gpus": st.fixed_dictionaries({"nodes": st.integers(-1, 5),
                                   "perNode": st.integers(-1, 17)}),
    "gpuClass": st.sampled_from(["t4", "h100-80gb", "v100"]),
    "maxObjectsPerImage": st.sampled_from([5, 100, 0, 10001]),
    "meanObjectsPerImage": st.sampled_from([3, 16, 40, 150, 0]),
    "image": st.sampled_from(["ghcr.io/yolofit/trainer:1", "docker.io/evil"]),
    "volumes": st.lists(st.sampled_from([
        {"name": "d", "persistentVolumeClaim": {"claimName": "x"}},
        {"name": "h", "hostPath": {"path": "/"}}, {"name": "s", "secret": {}}, {"name": "n"}]),
        max_size=2),
    "args": st.dictionaries(st.sampled_from(["lr0", "mosaic", "batch", "mosiac", "ü" * 3]),
                            junk, max_size=3),
    "plan": st.none() | st.fixed_dictionaries({
        "gpuClass": st.sampled_from(["t4", "h100-80gb"]), "nodes": st.integers(1, 4),
        "gpusPerNode": st.integers(1, 8), "gpus": st.integers(1, 32),
        "batchPerGpu": st.integers(1, 64), "accumulate": st.integers(1, 8),
        "amp": st.just("fp16"), "imgsz": st.just(640)}),
}


@st.composite
def specs(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(junk)  # not an object at all, sometimes
    spec: dict[str, Any] = {"model": "yolov8n", "data": "/d.yaml",
                            "gpus": {"nodes": 1, "perNode": 2}}
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=4, unique=True)):
        spec[key] = draw(GOOD[key])
    for key in draw(st.lists(st.sampled_from([*GOOD, "other"]), max_size=2, unique=True)):
        if draw(st.booleans()):
            spec[key] = draw(junk)  # wrong type / nested junk
    return spec


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    ns = draw(st.sampled_from(["team-a", "other", "ü-ns"]))
    name = draw(st.sampled_from(["j", "x" * 60]))
    obj: Any = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
                "metadata": {"name": name, "namespace": ns}, "spec": draw(specs())}
    if draw(st.integers(0, 49)) == 0:
        obj = draw(junk)
    old = None
    if draw(st.booleans()):
        old = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
               "metadata": {"name": name, "namespace": ns}, "spec": draw(specs())}
        if draw(st.booleans()):
            old["status"] = {"admitted": draw(st.booleans() | junk),
                             "plan": draw(GOOD["plan"] | junk)}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "UPDATE" if old is not None else "CREATE",
                        "object": obj, "oldObject": old, "userInfo": {"username": "t"}}}


def call(kind: str, review: dict[str, Any], snap: Snapshot) -> dict[str, Any]:
    status, body = respond(kind, review, snap)
    assert status == 200
    resp = body["response"]
    code = resp.get("status", {}).get("code", 200)
    assert code < 500, resp  # never a 5xx
    if not resp["allowed"]:
        assert FIELD.search(resp["status"]["message"]), resp["status"]["message"]
    return dict(resp)


def apply_patch(obj: dict[str, Any], resp: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for op in json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else []:
        if op["op"] == "remove":
            out["spec"].pop("plan", None)
        else:
            out["spec"]["plan"] = op["value"]
    return out


def reconciler_decision(snap: Snapshot, obj: dict[str, Any]) -> admission.Decision | None:
    """What the reconciler decides for this object (None: it cannot parse the spec)."""
    try:
        spec = YOLOTrainingJobSpec.model_validate(obj["spec"])
    except (ValidationError, TypeError):
        return None
    meta = obj["metadata"]
    return admission.decide(meta["name"], meta["namespace"], spec.model_copy(
        update={"plan": None}), snap.policy, snap.classes, snap.store, dict(snap.margins))


@pytest.mark.slow  # ~1 min of CPU: 10,000 reviews x 3 handler calls
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(review=reviews())
def test_generated_reviews(snap: Snapshot, review: dict[str, Any]) -> None:
    request = review["request"]
    obj, old = request["object"], request["oldObject"]
    mutate = call("mutate", review, snap)
    validate = call("validate", review, snap)
    SEEN["reviews"] += 1
    SEEN["denied" if not validate["allowed"] else "allowed"] += 1
    if not isinstance(obj, dict) or not isinstance(obj.get("spec"), dict):
        assert not validate["allowed"] and mutate["allowed"]
        return
    after = apply_patch(obj, mutate)
    status = (old or {}).get("status") if isinstance(old, dict) else None
    if isinstance(status, dict) and status.get("admitted") is True:
        SEEN["admitted-update"] += 1
        want = status.get("plan") if isinstance(status.get("plan"), dict) else (
            old["spec"].get("plan") if isinstance(old["spec"], dict) else None)
        assert after["spec"].get("plan") == (want if isinstance(want, dict) else None)
        return
    d = reconciler_decision(snap, obj)
    if d is None:  # the spec does not parse: the reconciler would not plan it either
        assert not validate["allowed"]
        return
    SEEN["planned" if d.plan else "refused" if d.refused else "profiling"] += 1
    assert after["spec"].get("plan") == (d.plan.wire() if d.plan else None)
    # What the mutating webhook wrote, the validating webhook accepts exactly when the
    # reconciler would plan (or profile) the job.
    second = dict(review, request={**request, "object": after})
    assert call("validate", second, snap)["allowed"] == (not d.refused)


def test_the_generator_reaches_every_branch() -> None:
    """Run after the property test (same module): the share of each branch, printed."""
    if not SEEN:
        pytest.skip("the property test did not run in this session")
    total = SEEN["reviews"]
    shares = {k: f"{v / total:.0%}" for k, v in SEEN.items() if k != "reviews"}
    print(f"{total} reviews: {shares}")
    assert total >= EXAMPLES
    for branch in ("allowed", "denied", "admitted-update", "planned", "refused", "profiling"):
        assert SEEN[branch] >= total // 200, (branch, shares)
