"""Measurements the operator may trust, margins learned once, and where results live.

Pure and table-driven, plus the reconciler against a fake that records every request (and
honours resourceVersion on the margins ConfigMap): an impostor pod's summary is ignored, a
forged or non-finite number is dropped with an Event, an OOM is learned once per (job UID,
attempt) across an operator crash, the outputs volume is made and mounted.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from opfixtures import make_profiles, summary

from yolofit.operator import feedback, kube, storage
from yolofit.operator.api import OutputStorage, Plan, Results, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.state import World
from yolofit.operator.status import PodView, pod_view, summarize

GiB = 2**30
T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
PLAN = Plan(gpu_class="t4", nodes=2, gpus_per_node=1, gpus=2, batch_per_gpu=16, accumulate=2,
            amp="fp16", imgsz=640, predicted_device_bytes=10 * GiB)
TRUST = feedback.Trust("uid-1", 0, 15 * GiB)


# --- parsing: bounded and finite, never raising ---------------------------------------------

def _raw(**fields: Any) -> str:
    base = {"rank": 0, "memory_kind": "cuda", "device_total_bytes": GiB, "steps": 3,
            "exit_reason": "completed"}
    return json.dumps({**base, **fields})


@pytest.mark.parametrize(("message", "outcome"), [
    (summary(1, 5 * GiB), "ok"),
    ('{"rank":0,"device_total_bytes":1e999}', "rejected"),  # inf: OverflowError before
    ('{"rank":0,"device_total_bytes":Infinity}', "rejected"),
    ('{"rank":0,"device_total_bytes":NaN}', "rejected"),
    ('{"rank":0,"device_total_bytes":-Infinity}', "rejected"),
    (_raw(device_total_bytes=-1), "rejected"),
    (_raw(device_total_bytes=2**64), "rejected"),
    (_raw(device_total_bytes=True), "rejected"),
    (_raw(device_total_bytes="5GiB"), "rejected"),
    (_raw(steps=1e999), "rejected"),
    (_raw(images_per_second=float("nan")), "rejected"),
    (_raw(rank=-3), "rejected"),
    (_raw(ranks=[[0, 1, 2, 3, 4, 0], [1, 1, 2, 1e999, 4, 0]]), "rejected"),
    (_raw(ranks=[[0, 1, 2]]), "rejected"),
    (_raw(ranks="junk"), "rejected"),
    (_raw(ranks=[[0, 1, 2, 3, 4, 0]] * 65), "rejected"),
    (_raw(message={"nested": ["junk"]}), "ok"),
    ("[" * 100_000, "none"),  # deeply nested, and too long to be a termination message
    ("[" * 5_000 + "]" * 5_000, "none"),
    ("not json", "none"), ("", "none"), ("[1]", "none"), ("null", "none"),
    ("Traceback (most recent call last):\n  boom", "none"),
])
def test_parse_summary_is_bounded_and_finite(message: str, outcome: str) -> None:
    report = feedback.parse_summary(message, 0, "p")
    got = "none" if report is None else "rejected" if report.rejected else "ok"
    assert got == outcome, report
    if report is not None and report.rejected:
        assert report.ranks == []


def test_forged_peaks_above_the_class_memory_are_dropped() -> None:
    for peak in (1e30, 16 * 15 * GiB, 10**15):
        report = feedback.parse_summary(_raw(device_total_bytes=peak), 0, "p")
        assert report is not None
        why = feedback.screen(report, "uid-1", 0, TRUST)
        assert "exceeds the class's memory" in why or "outside 0..2^53" in why, why
    ok = feedback.parse_summary(_raw(device_total_bytes=14 * GiB), 0, "p")
    assert ok is not None and feedback.screen(ok, "uid-1", 0, TRUST) == ""


def _view(rank: int, phase: str, code: int | None, message: str, owner: str = "uid-1",
          attempt: int = 0) -> PodView:
    return PodView(f"j-worker-{rank}", rank, attempt, phase, False, "n", code, message,
                   owner_uid=owner)


def test_an_impostor_pod_is_ignored_entirely() -> None:
    """A pod with the job's labels but another controller: neither its summary nor its OOM
    exit code counts (it would raise the margin and re-plan the job)."""
    forged = json.dumps({"rank": 1, "exit_reason": "oom", "device_total_bytes": 14 * GiB})
    pods = [_view(0, "Running", None, ""), _view(1, "Failed", 88, forged, owner="evil")]
    out = summarize(pods, PLAN, TRUST)
    assert not out.oom and out.ranks == [] and out.phase == "Admitted"
    assert len(out.dropped) == 1 and "not controlled by this job" in out.dropped[0]


def test_a_summary_of_another_attempt_is_ignored() -> None:
    old = _view(0, "Succeeded", 0, summary(0, 5 * GiB), attempt=1)
    out = summarize([old], PLAN.model_copy(update={"nodes": 1}),
                    feedback.Trust("uid-1", 2, 15 * GiB))
    assert out.ranks == [] and "the job is at attempt 2" in out.dropped[0]


def test_pod_view_reads_the_controller_uid() -> None:
    pod = {"metadata": {"name": "p", "labels": {"yolofit.io/rank": "x"}, "ownerReferences": [
        {"uid": "other", "controller": False}, {"uid": "uid-1", "controller": True}]}}
    v = pod_view(pod)
    assert v.owner_uid == "uid-1" and v.rank == -1  # a label yolofit did not write


# --- margins: per namespace, bounded, once per observation, decaying --------------------------

def test_an_observation_is_learned_once() -> None:
    key = feedback.margin_key("team-a", "yolov8n", "t4")
    first = feedback.learn({}, key, "uid-1/0", 0.1)
    again = feedback.learn(first.margins, key, "uid-1/0", 0.35)
    assert first.changed and not again.changed and again.margin == 0.1
    assert again.margins[key]["observations"] == 1
    nxt = feedback.learn(again.margins, key, "uid-1/1", 0.2)
    assert nxt.changed and nxt.margins[key]["seen"] == ["uid-1/0", "uid-1/1"]


@pytest.mark.parametrize(("old", "estimate", "peak", "up", "down"), [
    (0.0, 10 * GiB, 0, 0.1, 0.0),
    (0.0, 10 * GiB, 100 * GiB, 0.25, 0.0),  # a huge report moves it one bounded step
    (0.5, 10 * GiB, 10 * GiB, 0.6, 0.45),  # decays by one step at most
    (0.2, 10 * GiB, 11 * GiB, 0.3, 0.15),
    (0.2, 10 * GiB, 12 * GiB, 0.3, 0.2),  # the peak implies 0.2: no lower
    (0.95, 10 * GiB, 0, 1.0, 0.9),
])
def test_margins_move_in_bounded_steps(old: float, estimate: int, peak: int, up: float,
                                       down: float) -> None:
    assert feedback.update_margin(old, estimate, peak) == pytest.approx(up)
    assert feedback.decay_margin(old, estimate, peak) == pytest.approx(down)


def test_concurrent_writers_keep_every_observation_once() -> None:
    key = "ns|m|t4"
    stored = {key: {"margin": 0.2, "observations": 2, "seen": ["a/0", "b/0"]}}
    mine_old = {key: {"margin": 0.1, "observations": 1, "seen": ["a/0"]}}
    assert feedback.merge_margins(stored, mine_old) == stored  # the ConfigMap knows more
    mine_new = {key: {"margin": 0.3, "observations": 2, "seen": ["a/0", "c/0"]}}
    merged = feedback.merge_margins(stored, mine_new)[key]
    assert merged["margin"] == 0.3 and merged["observations"] == 3
    assert sorted(merged["seen"]) == ["a/0", "b/0", "c/0"]


@pytest.mark.parametrize("raw", [
    '{"ns|m|t4": {"margin": null}}', '{"ns|m|t4": {"margin": 1e999}}',
    '{"ns|m|t4": {"margin": NaN}}', '{"ns|m|t4": {"margin": 7}}', '{"ns|m|t4": 3}',
    '{"m|t4": {"margin": 0.2}}', '[]', 'null',
])
def test_broken_margin_entries_are_skipped(raw: str) -> None:
    assert feedback.decode_margins({feedback.MARGINS_KEY: raw}) == {}


# --- storage -------------------------------------------------------------------------------

JOB = {"metadata": {"name": "j", "namespace": "ns", "uid": "0123abcd-ffff-eeee"}}


def _spec(**kw: Any) -> YOLOTrainingJobSpec:
    return YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml", **kw})


def test_a_claim_per_job_owned_by_it_unless_retained() -> None:
    s = storage.plan_storage(JOB, _spec(), OutputStorage(size="20Gi", storage_class_name="fast"))
    assert s.kind == "pvc" and not s.ephemeral and s.claim is not None
    meta = s.claim["metadata"]
    assert meta["name"] == "j-outputs-0123abcd" == storage.claim_name("j", JOB["metadata"]["uid"])
    assert meta["ownerReferences"][0]["uid"] == JOB["metadata"]["uid"]
    assert s.claim["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                               "resources": {"requests": {"storage": "20Gi"}}}
    kept = storage.plan_storage(JOB, _spec(), OutputStorage(size="1Gi", retain=True))
    assert kept.claim is not None and "ownerReferences" not in kept.claim["metadata"]
    # ReadWriteOnce: mounted in pod 0 (rank 0 writes checkpoints), emptyDir elsewhere.
    vols0, mounts0, sec0 = storage.pod_volumes(s, _spec(), 0)
    vols1, _, sec1 = storage.pod_volumes(s, _spec(), 1)
    assert vols0 == [{"name": "yolofit-outputs",
                      "persistentVolumeClaim": {"claimName": "j-outputs-0123abcd"}}]
    assert mounts0 == [{"name": "yolofit-outputs", "mountPath": "/runs"}]
    assert sec0["fsGroup"] == 10001 and vols1 == [{"name": "yolofit-outputs", "emptyDir": {}}]
    assert sec1 == {}
    rwx = storage.plan_storage(JOB, _spec(), OutputStorage(size="1Gi",
                                                           access_mode="ReadWriteMany"))
    assert "persistentVolumeClaim" in storage.pod_volumes(rwx, _spec(), 3)[0][0]


@pytest.mark.parametrize(("spec_kw", "kind", "ephemeral"), [
    ({}, "emptyDir", True),
    ({"outputDir": "/out/runs", "volumes": [{"name": "o", "persistentVolumeClaim": {
        "claimName": "mine"}}], "volumeMounts": [{"name": "o", "mountPath": "/out"}]},
     "spec", False),
    ({"outputDir": "/out", "volumes": [{"name": "o", "emptyDir": {}}],
      "volumeMounts": [{"name": "o", "mountPath": "/out"}]}, "spec", True),
    ({"outputDir": "/output", "volumes": [{"name": "o", "emptyDir": {}}],
      "volumeMounts": [{"name": "o", "mountPath": "/out"}]}, "emptyDir", True),  # not a parent
])
def test_without_a_policy_size(spec_kw: dict[str, Any], kind: str, ephemeral: bool) -> None:
    s = storage.plan_storage(JOB, _spec(**spec_kw), OutputStorage())
    assert (s.kind, s.ephemeral) == (kind, ephemeral)
    volumes, mounts, _ = storage.pod_volumes(s, _spec(**spec_kw), 0)
    assert (volumes == []) is (kind == "spec")


def _report(attempt: int, start: int, done: int, resumed: str = "") -> feedback.PodReport:
    return feedback.PodReport(pod="p", attempt=attempt, start_epoch=start, epochs_done=done,
                              resumed_from=resumed)


def test_results_show_where_outputs_live_and_the_resume_point() -> None:
    s = storage.plan_storage(JOB, _spec(), OutputStorage(size="1Gi"))
    r0 = storage.results(None, s, _spec(), "j", 0, [])
    assert r0.path == "/runs/j/attempt-0" and r0.resume_epoch is None
    assert r0.storage == "persistentVolumeClaim j-outputs-0123abcd"
    r0 = storage.results(r0, s, _spec(), "j", 0, [_report(0, 0, 2)])  # OOM during epoch 3
    assert (r0.epochs_done, r0.checkpoint) == (2, "/runs/j/attempt-0/weights/last.pt")
    r1 = storage.results(r0, s, _spec(), "j", 1, [])  # relaunched: expected resume point
    assert (r1.path, r1.resume_from, r1.resume_epoch) == (
        "/runs/j/attempt-1", "/runs/j/attempt-0/weights/last.pt", 2)
    r1 = storage.results(r1, s, _spec(), "j", 1, [_report(1, 2, 5, r1.resume_from)])
    assert (r1.resume_epoch, r1.epochs_done) == (2, 5)
    assert r1.checkpoint == "/runs/j/attempt-1/weights/last.pt"
    assert storage.results(Results(), s, _spec(), "j", 0, [_report(0, 0, 0)]).checkpoint == ""


# --- the reconciler, against a fake that records every request ------------------------------

class RecordingKube:
    """Objects by path; every request recorded with its body; resourceVersion honoured."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.version = 0

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return copy.deepcopy(obj)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.requests.append(("POST", path, copy.deepcopy(body)))
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(body)
        return self._bump(self.objects[key])

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        self.requests.append(("GET", path, None))
        return copy.deepcopy(self.objects[path]) if path in self.objects else None

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        self.requests.append(("PATCH", path, copy.deepcopy(patch)))
        obj = self.objects.get(path)
        if obj is None:
            return None
        want = (patch.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != obj["metadata"].get("resourceVersion"):
            raise kube.ApiError(409, "PATCH", path, "the object has been modified")
        for k, v in patch.items():
            if k != "metadata":
                obj[k] = {**obj.get(k, {}), **v} if isinstance(v, dict) else v
        return self._bump(obj)

    async def delete(self, path: str, uid: str = "") -> bool:
        self.requests.append(("DELETE", path, None))
        return self.objects.pop(path, None) is not None


CM = kube.configmap_path("yolofit-system", "yolofit-learned-margins")


def _world(tmp: Path, api: RecordingKube | None = None) -> World:
    world = World(store=make_profiles(tmp))
    world.set_nodes([FleetNode(f"t4-{i}", T4, 4) for i in range(2)])
    if api is not None and CM in api.objects:
        world.margins = feedback.decode_margins(api.objects[CM].get("data"))
    return world


def _job(uid: str = "uid-1") -> dict[str, Any]:
    return {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": "j", "namespace": "ns", "uid": uid, "generation": 1},
            "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 2, "perNode": 1}}}


def _reconciler(world: World, api: RecordingKube, events: list[tuple[str, str]]) -> Reconciler:
    r = Reconciler(world, api, lambda b, t, reason, m: events.append((reason, m)),  # type: ignore[arg-type]
                   lambda key, ns: asyncio.sleep(0, None))
    r.trust_spec_plan = False
    return r


def _launched(world: World, api: RecordingKube, events: list[tuple[str, str]],
              job: dict[str, Any]) -> Reconciler:
    """The job in the world and a first pass of a reconciler over `api`: its pods made."""
    world.jobs[("ns", "j")] = job
    r = _reconciler(world, api, events)
    asyncio.run(r.reconcile(("ns", "j")))
    return r


def _terminate(world: World, api: RecordingKube, codes: dict[int, tuple[int, str]]) -> None:
    for rank, (code, message) in codes.items():
        path = kube.pods_path("ns", f"j-worker-{rank}")
        pod = copy.deepcopy(api.objects[path])
        pod["status"] = {"phase": "Succeeded" if code == 0 else "Failed",
                         "containerStatuses": [{"state": {"terminated": {
                             "exitCode": code, "message": message}}}]}
        world.pods[("ns", "j")][f"j-worker-{rank}"] = pod


def test_an_oom_is_learned_once_across_an_operator_crash(tmp_path: Path) -> None:
    api, events = RecordingKube(), []
    world, job = _world(tmp_path), _job()
    r = _launched(world, api, events, job)
    plan = job["status"]["plan"]
    oom = summary(1, 14 * GiB, "oom", "CUDA out of memory")
    _terminate(world, api, {0: (1, summary(0, 9 * GiB, "error")), 1: (88, oom)})
    before = copy.deepcopy(job["status"])
    pods_seen = copy.deepcopy(world.pods[("ns", "j")])
    asyncio.run(r.reconcile(("ns", "j")))
    assert job["status"]["attempt"] == 1 and job["status"]["plan"]["batchPerGpu"] < plan[
        "batchPerGpu"]
    stored = feedback.decode_margins(api.objects[CM]["data"])
    assert list(stored) == ["ns|yolov8n|t4"]
    margin = stored["ns|yolov8n|t4"]["margin"]
    assert stored["ns|yolov8n|t4"]["seen"] == ["uid-1/0"] and 0 < margin <= 0.25

    # kill -9 after the margin was saved, before the job's status was: a new operator sees
    # the same OOM pods of attempt 0 again, and the margins from the ConfigMap.
    job["status"] = before
    world2 = _world(tmp_path / "w2", api)
    world2.jobs[("ns", "j")] = job
    world2.pods[("ns", "j")] = pods_seen  # the OOM pods, not yet gone
    asyncio.run(_reconciler(world2, api, []).reconcile(("ns", "j")))
    again = feedback.decode_margins(api.objects[CM]["data"])["ns|yolov8n|t4"]
    assert again["margin"] == margin and again["observations"] == 1
    assert job["status"]["attempt"] == 1  # the re-plan itself still happened


def test_forged_and_non_finite_summaries_are_dropped_with_an_event(tmp_path: Path) -> None:
    api, events = RecordingKube(), []
    world, job = _world(tmp_path), _job()
    r = _launched(world, api, events, job)
    _terminate(world, api, {0: (0, '{"rank":0,"device_total_bytes":1e999}'),
                            1: (0, summary(1, 10**30))})
    # An impostor with the job's labels (another controller) that "ran out of memory".
    fake = copy.deepcopy(world.pods[("ns", "j")]["j-worker-1"])
    fake["metadata"].update(name="j-worker-9", ownerReferences=[
        {"uid": "evil", "controller": True}])
    fake["status"]["containerStatuses"][0]["state"]["terminated"].update(
        exitCode=88, message=json.dumps({"exit_reason": "oom", "device_total_bytes": 1e15}))
    world.pods[("ns", "j")]["j-worker-9"] = fake
    asyncio.run(r.reconcile(("ns", "j")))
    status = job["status"]
    json.dumps(status, allow_nan=False)  # a status write can always be serialised
    assert status["phase"] == "Succeeded" and status.get("measured") is None
    assert CM not in api.objects  # nothing learned
    dropped = [m for reason, m in events if reason == "MeasurementDropped"]
    # The impostor never reaches the summaries: the job's children are matched by owner UID
    # before anything is read from them (it is reported as a foreign object instead).
    assert len(dropped) == 2, dropped
    assert not any("j-worker-9" in m for m in dropped)
    assert any("exceeds the class's memory" in m or "2^53" in m for m in dropped)
    events.clear()
    asyncio.run(r.reconcile(("ns", "j")))  # terminal: no new Events on later passes
    assert [e for e in events if e[0] == "MeasurementDropped"] == []


def test_the_outputs_claim_is_made_and_mounted(tmp_path: Path) -> None:
    api, events = RecordingKube(), []
    world = _world(tmp_path)
    world.set_policy(world.policy.model_copy(update={"outputs": OutputStorage(size="5Gi")}))
    job = _job("0123abcd-1111")
    _launched(world, api, events, job)
    posts = [p for m, p, _ in api.requests if m == "POST"]
    claim = "/api/v1/namespaces/ns/persistentvolumeclaims"
    assert posts.index(claim) < posts.index(kube.pods_path("ns"))  # claim before pods
    pvc = api.objects[f"{claim}/j-outputs-0123abcd"]
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "0123abcd-1111"
    pod0 = api.objects[kube.pods_path("ns", "j-worker-0")]
    assert {"name": "yolofit-outputs", "persistentVolumeClaim": {
        "claimName": "j-outputs-0123abcd"}} in pod0["spec"]["volumes"]
    assert pod0["spec"]["securityContext"]["fsGroup"] == 10001
    results = job["status"]["results"]
    assert results["path"] == "/runs/j/attempt-0" and results["ephemeral"] is False
    cond = {c["type"]: c for c in job["status"]["conditions"]}["ResultsPersistent"]
    assert cond["status"] == "True"


def test_without_storage_the_job_warns_that_results_are_ephemeral(tmp_path: Path) -> None:
    api, events = RecordingKube(), []
    world, job = _world(tmp_path), _job()
    _launched(world, api, events, job)
    pod0 = api.objects[kube.pods_path("ns", "j-worker-0")]
    assert {"name": "yolofit-outputs", "emptyDir": {}} in pod0["spec"]["volumes"]
    cond = {c["type"]: c for c in job["status"]["conditions"]}["ResultsPersistent"]
    assert (cond["status"], cond["reason"]) == ("False", "EphemeralOutputs")
    assert "lost when the pods end" in cond["message"]
    assert ("EphemeralOutputs", storage.EPHEMERAL_MESSAGE) in events
    assert job["status"]["results"]["ephemeral"] is True


def test_a_success_measured_on_the_gpu_lets_the_margin_decay_once(tmp_path: Path) -> None:
    api, events = RecordingKube(), []
    key = "ns|yolov8n|t4"
    api.objects[CM] = {"metadata": {"name": "yolofit-learned-margins", "resourceVersion": "7"},
                       "data": feedback.encode_margins({key: {
                           "margin": 0.3, "observations": 2, "seen": ["old/0", "old/1"]}})}
    world, job = _world(tmp_path, api), _job()
    r = _launched(world, api, events, job)
    estimate = job["status"]["plan"]["predictedDeviceBytes"]
    _terminate(world, api, {i: (0, summary(i, int(estimate * 1.02))) for i in (0, 1)})
    asyncio.run(r.reconcile(("ns", "j")))
    assert job["status"]["phase"] == "Succeeded"
    entry = feedback.decode_margins(api.objects[CM]["data"])[key]
    assert entry["margin"] == pytest.approx(0.25) and entry["seen"][-1] == "uid-1/0"
    # The same success seen again (a restarted operator): no second decay.
    job["status"]["phase"] = "Running"
    world2 = _world(tmp_path / "w2", api)
    world2.jobs[("ns", "j")] = job
    world2.pods[("ns", "j")] = world.pods[("ns", "j")]
    asyncio.run(_reconciler(world2, api, []).reconcile(("ns", "j")))
    assert feedback.decode_margins(api.objects[CM]["data"])[key]["margin"] == pytest.approx(0.25)
