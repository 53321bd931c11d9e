"""Fault injection at every API call site of the reconciler, against a recording apiserver
(tests/operator/recording_api.py; Kube's own create/delete semantics run for real):

- permanent errors (422, 403, 400, 404 on create) end the job Failed with a condition and an
  Event naming the request and the API's message, the quota released and no pod left;
- 409 on create is "already exists"; transient errors (429 with Retry-After, 500, timeout,
  409 on patch, 404 on a vanished pod) end the pass with a backoff and the next pass
  carries on;
- a kill (SIGKILL) right after any request of launch, OOM re-plan and gang restart, then a
  fresh operator primed from the apiserver: no pod created twice, the OOM learned once, no
  relaunch with a stale plan.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultharness import (
    JOB,
    KEY,
    NAME,
    NS,
    Harness,
    config_of,
    end_pod,
    kill_and_restart,
    live_pods,
    new_job,
    run_pods,
    running_job,
)
from opfixtures import summary

from yolofit.operator import feedback, kube

GiB = 2**30


# --- launch: every call site x every fault --------------------------------------------------

SITES = {
    "spec.plan mirror": ("PATCH", rf"/yolotrainingjobs/{NAME}$"),
    "Service create": ("POST", r"/services$"),
    "pod create": ("POST", r"/pods$"),
    "gate removal": ("PATCH", r"/pods/j-worker-0$"),
    "status write": ("PATCH", rf"/{NAME}/status$"),
}
PERMANENT = {422: "Invalid", 403: "Forbidden", 400: "BadRequest"}
TRANSIENT = [429, 500, 503, 0]  # 0: timeout (no answer)


def settled_with(tmp_path: Path, site: str, code: int, times: int = 1) -> Harness:
    """A new job after four passes, its request at `site` failing with `code` (`times` times,
    -1 = always)."""
    h = Harness(tmp_path)
    new_job(h.api)
    h.api.fail(*SITES[site], code, times=times)
    h.settle(4)
    return h


def launched(h: Harness) -> None:
    """The job is admitted with its whole gang created and ungated, quota held."""
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    assert not any(p["spec"].get("schedulingGates") for p in pods.values())
    assert h.status["phase"] == "Admitted" and h.status["admitted"]
    assert h.world.admitted_gpus(NS) == 2
    creates = [b["metadata"]["name"] for b in h.api.sent("POST", r"/pods$")]
    assert len(set(creates)) == 2


@pytest.mark.parametrize("site", [s for s in SITES if s != "spec.plan mirror"])
@pytest.mark.parametrize("code", list(PERMANENT))
def test_permanent_error_fails_the_job_visibly_and_releases_everything(
        tmp_path: Path, site: str, code: int) -> None:
    h = Harness(tmp_path)
    new_job(h.api)
    method, path = SITES[site]
    h.api.fail(method, path, code, times=-1)
    h.settle(3)
    st = h.status if site != "status write" else None
    if site == "status write":
        # Nowhere to write Failed: the refusal is an Event on the job (and the log).
        assert "StatusNotWritten" in h.reasons()
        assert any(f"injected {code}" in m for _, _, m in h.events)
        return
    if site == "gate removal":
        # A pod patch refused for good: the job fails and no pod is left holding a GPU.
        pass
    assert st is not None and st["phase"] == "Failed", st
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == PERMANENT[code]
    assert f"{method} " in failed["message"] and f"HTTP {code}" in failed["message"]
    assert f"injected {code} {PERMANENT[code]}" in failed["message"]  # the API's own words
    warning = [(t, m) for t, r, m in h.events if r == PERMANENT[code]]
    assert warning and warning[0][0] == "Warning" and failed["message"] == warning[0][1]
    assert h.world.reserved == {} and h.world.admitted_gpus(NS) == 0  # quota released
    assert live_pods(h.api) == {}  # every rank deleted


@pytest.mark.parametrize("site", [s for s in SITES if s not in ("status write",
                                                                 "spec.plan mirror")])
def test_404_on_create_fails_but_404_on_a_patch_is_retried(tmp_path: Path, site: str) -> None:
    h = settled_with(tmp_path, site, 404)
    if SITES[site][0] == "POST":  # the namespace is gone (or going): nothing will ever be created
        assert h.status["phase"] == "Failed" and h.world.reserved == {}
        assert live_pods(h.api) == {}
    else:  # the object vanished under us: the next pass sees that and carries on
        launched(h)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("code", TRANSIENT)
def test_transient_error_backs_off_and_the_next_pass_carries_on(
        tmp_path: Path, site: str, code: int) -> None:
    h = Harness(tmp_path)
    new_job(h.api)
    method, path = SITES[site]
    h.api.fail(method, path, code, retry_after=7 if code == 429 else None)
    for _ in range(3):  # the gate comes off in the second pass, once the gang exists
        first = h.reconcile()
        if h.api.faults[0].times == 0:
            break
    assert h.api.faults[0].times == 0 and h.status.get("phase") != "Failed"
    if site not in ("status write", "spec.plan mirror"):  # those two end the pass itself
        assert first is None and h.wakes, "a transient error schedules the next pass"
        if code == 429:
            assert 7 in h.wakes  # the server's Retry-After
        assert "retrying" in h.status["message"]
    h.settle(4)
    launched(h)


@pytest.mark.parametrize("site", ["spec.plan mirror", "status write"])
def test_409_on_a_patch_is_retried(tmp_path: Path, site: str) -> None:
    launched(settled_with(tmp_path, site, 409))


@pytest.mark.parametrize("site", ["Service create", "pod create"])
def test_409_on_create_is_already_exists(tmp_path: Path, site: str) -> None:
    h = settled_with(tmp_path, site, 409)
    assert h.status["phase"] == "Admitted" and h.status["admitted"]


def test_the_retry_backoff_grows_and_resets(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    new_job(h.api)
    h.api.fail("POST", r"/services$", 500, times=3)
    for _ in range(3):
        h.reconcile()
    assert h.wakes == [1.0, 2.0, 4.0]
    h.settle(3)
    launched(h)
    h.api.fail("PATCH", r"/pods/", 503, times=1)
    end_pod(h.api, "j-worker-1", 0)
    h.api.objects[kube.pods_path(NS, "j-worker-0")]["spec"]["schedulingGates"] = [
        {"name": "yolofit.io/gang"}]
    h.sync()
    h.reconcile()
    assert h.wakes[-1] == 1.0  # counting starts over after a clean pass


@pytest.mark.parametrize("code", [*PERMANENT, 404])
def test_the_spec_plan_mirror_is_best_effort(tmp_path: Path, code: int) -> None:
    """spec.plan only mirrors status.plan for kubectl's columns: refused, it is logged and
    the job runs on."""
    launched(settled_with(tmp_path, "spec.plan mirror", code, times=-1))


# --- the OOM and restart paths -------------------------------------------------------------

def oom(h: Harness) -> None:
    end_pod(h.api, "j-worker-1", 88, summary(1, 15 * GiB, "oom", "CUDA out of memory"))
    h.sync()


OOM_SITES = {
    "margins ConfigMap create": ("POST", r"/configmaps$"),
    "status write": ("PATCH", rf"/{NAME}/status$"),
    "spec.plan mirror": ("PATCH", rf"/yolotrainingjobs/{NAME}$"),
    "old pods delete": ("DELETE", r"/pods/"),
}


def replanned_once(h: Harness, first_batch: int, margins_saved: bool = True) -> None:
    st = h.status
    assert st["attempt"] == 1 and len(st["replans"]) == 1, st
    new_batch = st["plan"]["batchPerGpu"]
    assert new_batch < first_batch
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    for p in pods.values():  # never the old plan again
        assert p["metadata"]["labels"]["yolofit.io/attempt"] == "1"
        assert config_of(p)["batch_per_gpu"] == new_batch
    margins = h.world.margins["ns|yolov8n|t4"]
    assert margins["observations"] == 1 and margins["seen"] == ["job-uid/0"]
    if margins_saved:
        cm = h.api.objects[kube.configmap_path("yolofit-system", "yolofit-learned-margins")]
        assert feedback.decode_margins(cm["data"])["ns|yolov8n|t4"]["observations"] == 1


@pytest.mark.parametrize("site", OOM_SITES)
@pytest.mark.parametrize("code", [403, 500, 0])
def test_faults_during_the_oom_replan(tmp_path: Path, site: str, code: int) -> None:
    h = Harness(tmp_path)
    running_job(h)
    first = h.status["plan"]["batchPerGpu"]
    oom(h)
    h.api.fail(*OOM_SITES[site], code)
    h.settle(5)
    permanent_here = code == 403 and site == "status write"
    if permanent_here:  # the re-plan itself cannot be recorded: it is reported instead
        assert "StatusNotWritten" in h.reasons()
        return
    replanned_once(h, first, margins_saved=not (site.startswith("margins") and code == 403))


def test_a_rank_failing_deletes_every_rank_and_releases_the_quota(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    running_job(h)
    end_pod(h.api, "j-worker-1", 2, summary(1, GiB, "data-missing", "no /d.yaml"))
    h.sync()
    h.reconcile()
    st = h.status
    assert st["phase"] == "Failed" and "no /d.yaml" in st["message"]
    assert live_pods(h.api) == {}  # rank 0 no longer holds its GPU
    assert "j-worker-1" in h.api.pods(NS)  # the failed pod stays for its logs
    assert h.world.reserved == {} and h.world.admitted_gpus(NS) == 0
    assert st.get("restarts", []) == []  # a user error: no restart


def test_an_evicted_rank_restarts_the_whole_gang(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    running_job(h)
    end_pod(h.api, "j-worker-0", 143, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
         "message": "Eviction API: evicting", "lastTransitionTime": "2026-12-01T10:00:05Z"}])
    h.sync()
    h.reconcile()
    st = h.status
    assert st["attempt"] == 1 and st["phase"] == "Admitted"
    assert [r["reason"] for r in st["restarts"]] == ["Disrupted"]
    assert "EvictionByEvictionAPI" in st["restarts"][0]["message"]
    assert h.api.pods(NS) == {}  # all ranks deleted at once, the running one too
    assert h.world.admitted_gpus(NS) == 2  # the job keeps its quota while it restarts
    h.settle(3)
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    assert {p["metadata"]["labels"]["yolofit.io/attempt"] for p in pods.values()} == {"1"}
    assert "Disrupted" in h.reasons()


def test_restarts_stop_at_max_restarts(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.world.policy.failure_policy.max_restarts = 1
    running_job(h)
    for attempt in (1, 2):
        end_pod(h.api, "j-worker-1", 143)
        h.sync()
        h.settle(3)
        run_pods(h.api)
        h.sync()
        h.reconcile()
        if attempt == 1:
            assert h.status["attempt"] == 1 and h.status["phase"] == "Running"
    st = h.status
    assert st["phase"] == "Failed" and st["attempt"] == 1
    assert next(c for c in st["conditions"] if c["type"] == "Failed")["reason"] == \
        "MaxRestartsReached"
    assert live_pods(h.api) == {} and h.world.reserved == {}


# --- SIGKILL after every request, then a restarted operator ---------------------------------

def requests_of(scenario: Any, tmp_path: Path) -> int:
    h = Harness(tmp_path / "count")
    start = scenario(h)
    return len(h.api.requests) - start


def launch_scenario(h: Harness) -> int:
    new_job(h.api)
    h.settle(4)
    return 0


def disruption(h: Harness) -> None:
    end_pod(h.api, "j-worker-1", 143)
    h.sync()


def running_then(event: Callable[[Harness], None]) -> Callable[[Harness], int]:
    """The scenario of an OOM re-plan (event: oom) or a gang restart (event: disruption): the
    job running, the event, then the passes whose requests count."""
    def scenario(h: Harness) -> int:
        running_job(h)
        event(h)
        start = len(h.api.requests)
        h.settle(5)
        return start
    return scenario


def killed_after(n: int, tmp_path: Path, prepare: Any) -> Harness:
    h = Harness(tmp_path)
    prepare(h)
    return kill_and_restart(h, len(h.api.requests) + n)


@pytest.mark.parametrize("n", range(1, 12))
def test_kill_9_after_each_request_of_launch(tmp_path: Path, n: int) -> None:
    h = killed_after(n, tmp_path, lambda h: new_job(h.api))
    launched(h)


@pytest.mark.parametrize("n", range(1, 17))
def test_kill_9_after_each_request_of_the_oom_replan(tmp_path: Path, n: int) -> None:
    first: dict[str, int] = {}

    def prepare(h: Harness) -> None:
        running_job(h)
        first["batch"] = h.status["plan"]["batchPerGpu"]
        oom(h)

    h = killed_after(n, tmp_path, prepare)
    replanned_once(h, first["batch"])
    assert [b for b in h.api.sent("POST", r"/configmaps$")] or h.api.sent(
        "PATCH", r"/configmaps/")


@pytest.mark.parametrize("n", range(1, 17))
def test_kill_9_after_each_request_of_a_gang_restart(tmp_path: Path, n: int) -> None:
    def prepare(h: Harness) -> None:
        running_job(h)
        disruption(h)

    h = killed_after(n, tmp_path, prepare)
    st = h.status
    assert st["attempt"] == 1 and len(st["restarts"]) == 1, st
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    assert {p["metadata"]["labels"]["yolofit.io/attempt"] for p in pods.values()} == {"1"}


def test_the_kill_matrices_cover_every_request(tmp_path: Path) -> None:
    """The parametrized ranges above reach past the last request of each scenario."""
    assert requests_of(launch_scenario, tmp_path / "a") < 12
    assert requests_of(running_then(oom), tmp_path / "b") < 17
    assert requests_of(running_then(disruption), tmp_path / "c") < 17


# --- pods that cannot be placed, a class that left ------------------------------------------

def test_unschedulable_past_the_timeout_goes_back_to_queued_and_releases_the_quota(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    new_job(h.api)
    h.settle(3)
    for pod in h.api.pods(NS).values():
        pod["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    h.reconcile()
    st = h.status
    assert st["phase"] == "Queued" and not st["admitted"] and st["attempt"] == 1
    assert "Insufficient nvidia.com/gpu" in st["message"]
    assert h.api.pods(NS) == {} and h.world.admitted_gpus(NS) == 0
    assert next(c for c in st["conditions"] if c["type"] == "Admitted")["reason"] == \
        "Unschedulable"
    h.settle(3)  # the queue admits it again: a new attempt of pods
    pods = h.api.pods(NS)
    assert h.status["admitted"] and {p["metadata"]["labels"]["yolofit.io/attempt"]
                                     for p in pods.values()} == {"1"}


def test_a_class_that_left_the_fleet_waits_queued_holding_no_quota(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    new_job(h.api)
    h.api.objects[JOB]["status"] = {"phase": "Admitted", "admitted": True, "plan": {
        "gpuClass": "a100-80gb", "nodes": 2, "gpusPerNode": 1, "gpus": 2, "batchPerGpu": 8,
        "accumulate": 4, "amp": "bf16", "imgsz": 640}}  # admitted before its class left
    h.settle(2)
    st = h.status
    assert st["phase"] == "Queued" and not st.get("admitted")
    assert st["message"].startswith("GPU class a100-80gb of the plan is not in the fleet")
    assert h.api.pods(NS) == {} and h.world.admitted_gpus(NS) == 0
    assert h.reasons() == ["GpuClassUnavailable"]  # once, not every pass


def test_a_stale_pod_no_watch_saw_go_does_not_block_the_relaunch(tmp_path: Path) -> None:
    """A restarted operator's LIST saw the old pods terminating; they went before its watch
    started, so no DELETED event will ever come: the relaunch must not wait for them."""
    h = Harness(tmp_path)
    running_job(h)
    oom(h)
    h.api.fail("DELETE", r"/pods/", 500, times=-1)
    h.reconcile()
    assert h.status["attempt"] == 1
    ghosts = copy.deepcopy(h.api.pods(NS))
    for name, ghost in ghosts.items():
        ghost["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z"
        del h.api.objects[kube.pods_path(NS, name)]
    h.api.faults.clear()
    h.world.pods[KEY] = ghosts  # what the LIST said; no watch event follows
    for _ in range(2):
        asyncio.run(h.r.reconcile(KEY))
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    assert {p["metadata"]["labels"]["yolofit.io/attempt"] for p in pods.values()} == {"1"}


def test_a_late_event_of_an_old_pod_never_deletes_its_newer_namesake(tmp_path: Path) -> None:
    """Pods are deleted by UID: a watch event of the old attempt's pod arriving after the new
    attempt's pod of the same name was made must not get the new one deleted."""
    h = Harness(tmp_path)
    running_job(h)
    old = copy.deepcopy(h.api.pods(NS)["j-worker-0"])
    end_pod(h.api, "j-worker-1", 143)
    h.settle(4)
    run_pods(h.api)
    h.sync()
    new_uid = h.api.pods(NS)["j-worker-0"]["metadata"]["uid"]
    assert h.status["attempt"] == 1 and new_uid != old["metadata"]["uid"]
    old["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z"
    h.world.pods[KEY]["j-worker-0"] = old  # the late MODIFIED event of the old pod
    asyncio.run(h.r.reconcile(KEY))
    assert h.api.pods(NS)["j-worker-0"]["metadata"]["uid"] == new_uid
    assert h.status["attempt"] == 1 and len(h.status["restarts"]) == 1
