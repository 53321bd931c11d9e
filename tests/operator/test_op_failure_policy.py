"""The failure policy, pure: pods as the apiserver shows them -> what happens to the gang."""

from __future__ import annotations

from typing import Any

import pytest

from yolofit.operator.api import FailurePolicy, Restart
from yolofit.operator.failure_policy import (
    decide,
    pod_facts,
    relaunch_wait,
    restart_backoff,
)

T0 = "2026-12-01T10:00:00Z"
NOW = 1_796_119_200.0 + 10  # 10 s after T0 (2026-12-01T10:00:00Z)
POLICY = FailurePolicy(max_restarts=2, restart_backoff_seconds=10,
                       max_restart_backoff_seconds=25, pod_start_timeout_seconds=60,
                       unschedulable_timeout_seconds=120)


def pod(rank: int, phase: str = "Running", exit_code: int | None = None, reason: str = "",
        waiting: str = "", conditions: list[dict[str, Any]] | None = None,
        deleting: bool = False, gated: bool = False, pod_reason: str = "",
        created: str = T0) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if phase == "Running":
        state = {"running": {"startedAt": T0}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": reason or "Error"}}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    meta: dict[str, Any] = {"name": f"j-worker-{rank}", "creationTimestamp": created,
                            "labels": {"yolofit.io/rank": str(rank), "yolofit.io/attempt": "0"}}
    if deleting:
        meta["deletionTimestamp"] = T0
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or [],
                              "containerStatuses": [{"name": "trainer", "state": state}]}
    if pod_reason:
        status["reason"] = pod_reason
    spec = {"schedulingGates": [{"name": "yolofit.io/gang"}]} if gated else {}
    return {"metadata": meta, "spec": spec, "status": status}


def unschedulable(message: str, since: str = "2026-12-01T09:50:00Z") -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": message, "lastTransitionTime": since}]


EVICTED = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": T0}]
PREEMPTED = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
              "message": "default-scheduler: preempting to accommodate a higher priority pod",
              "lastTransitionTime": T0}]
LONG_AGO = "2026-12-01T09:00:00Z"

CASES: list[tuple[str, list[dict[str, Any]], int, str, str]] = [
    # (case, pods, restarts so far, action, reason)
    ("all running", [pod(0), pod(1)], 0, "none", ""),
    ("all succeeded", [pod(0, "Succeeded", 0), pod(1, "Succeeded", 0)], 0, "none", ""),
    ("evicted (eviction API)", [pod(0), pod(1, "Failed", 143, conditions=EVICTED)], 0,
     "restart", "Disrupted"),
    ("preempted, still running", [pod(0), pod(1, conditions=PREEMPTED)], 0, "restart",
     "Disrupted"),
    ("SIGTERM (drain) 143", [pod(0), pod(1, "Failed", 143)], 0, "restart", "Disrupted"),
    ("SIGKILL 137 after the grace period", [pod(0), pod(1, "Failed", 137)], 1, "restart",
     "Disrupted"),
    ("kubelet eviction", [pod(0), pod(1, "Failed", pod_reason="Evicted")], 0, "restart",
     "Disrupted"),
    ("disruption wins over the peer's exit 1", [pod(0, "Failed", 1),
                                                pod(1, "Failed", 143)], 0, "restart",
     "Disrupted"),
    ("worker deleted from a running gang", [pod(0)], 0, "restart", "WorkerDeleted"),
    ("worker deleting in a running gang", [pod(0), pod(1, deleting=True)], 0, "restart",
     "WorkerDeleted"),
    ("missing pod before anything started: launch recreates it",
     [pod(0, "Pending", gated=True)], 0, "none", ""),
    ("restarts used up", [pod(0), pod(1, "Failed", 143)], 2, "fail", "MaxRestartsReached"),
    ("exit 2 bad data: the outcome fails it, no restart", [pod(0), pod(1, "Failed", 2)], 0,
     "none", ""),
    ("exit 88 CUDA OOM: the re-plan path", [pod(0), pod(1, "Failed", 88)], 0, "none", ""),
    ("exit 1 trainer error", [pod(0, "Failed", 1), pod(1)], 0, "none", ""),
    ("137 OOMKilled: container memory limit", [pod(0), pod(1, "Failed", 137, "OOMKilled")],
     0, "fail", "HostOutOfMemory"),
    ("image pull back-off, young", [pod(0, "Pending", waiting="ImagePullBackOff")], 0,
     "none", ""),
    ("image pull back-off past the timeout",
     [pod(0, "Pending", waiting="ImagePullBackOff", created=LONG_AGO), pod(1)], 0, "fail",
     "ImagePullBackOff"),
    ("secret missing past the timeout",
     [pod(0, "Pending", waiting="CreateContainerConfigError", created=LONG_AGO)], 0, "fail",
     "CreateContainerConfigError"),
    ("missing PVC past the timeout",
     [pod(0, "Pending", conditions=unschedulable(
         '0/9 nodes are available: persistentvolumeclaim "data" not found.'))], 0, "fail",
     "VolumeMissing"),
    ("unschedulable, within the timeout",
     [pod(0, "Pending", conditions=unschedulable("0/9 nodes are available: 9 Insufficient "
                                                 "nvidia.com/gpu.", T0))], 0, "none", ""),
    ("unschedulable past the timeout: back to Queued",
     [pod(0, "Pending", conditions=unschedulable(
         "0/9 nodes are available: 9 Insufficient nvidia.com/gpu.", LONG_AGO))], 0,
     "requeue", "Unschedulable"),
    ("pending past the start timeout", [pod(0, "Pending", created=LONG_AGO)], 0, "fail",
     "PodStartTimeout"),
    ("gated pods wait for the gang", [pod(0, "Pending", gated=True, created=LONG_AGO)], 0,
     "none", ""),
]


@pytest.mark.parametrize(("case", "pods", "restarts", "action", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide(case: str, pods: list[dict[str, Any]], restarts: int, action: str,
                reason: str) -> None:
    d = decide([pod_facts(p) for p in pods], 2 if len(pods) < 2 else len(pods), restarts,
               POLICY, NOW)
    assert (d.action, d.reason) == (action, reason), d.message
    if action != "none":
        assert d.pod and d.message  # names the pod and says what happened


def test_messages_name_the_pod_and_the_limit() -> None:
    d = decide([pod_facts(p) for p in (pod(0), pod(1, "Failed", 143, conditions=EVICTED))], 2,
               0, POLICY, NOW)
    assert "j-worker-1" in d.message and "EvictionByEvictionAPI" in d.message
    assert "restart 1 of at most 2" in d.message
    d = decide([pod_facts(pod(0, "Failed", 137, "OOMKilled"))], 1, 0, POLICY, NOW)
    assert "spec.resources.memory" in d.message
    d = decide([pod_facts(pod(0, "Pending", conditions=unschedulable(
        '0/9 nodes are available: persistentvolumeclaim "data" not found.')))], 1, 0,
        POLICY, NOW)
    assert 'persistentvolumeclaim "data" not found' in d.message and "spec.volumes" in d.message


def test_backoff_doubles_to_the_cap() -> None:
    assert [restart_backoff(n, POLICY) for n in range(5)] == [0, 10, 20, 25, 25]


def test_relaunch_waits_only_for_an_attempt_that_began_with_a_restart() -> None:
    restarts = [Restart(attempt=1, reason="Disrupted", time=T0)]
    assert relaunch_wait(restarts, 1, POLICY, NOW) == pytest.approx(0.0)  # 10 s backoff, 10 s on
    assert relaunch_wait(restarts, 1, POLICY, NOW - 4) == pytest.approx(4.0)
    assert relaunch_wait(restarts, 2, POLICY, NOW - 4) == 0.0  # attempt 2: an OOM re-plan
    assert relaunch_wait([], 0, POLICY, NOW) == 0.0


def test_pods_not_started_yet_are_looked_at_again_when_they_would_time_out() -> None:
    young = pod(0, "Pending", waiting="ImagePullBackOff")  # created T0, now T0 + 10 s
    assert decide([pod_facts(young)], 1, 0, POLICY, NOW).recheck == pytest.approx(50)
    placing = pod(0, "Pending", conditions=unschedulable("0/9 nodes are available", T0))
    assert decide([pod_facts(placing)], 1, 0, POLICY, NOW).recheck == pytest.approx(110)
    assert decide([pod_facts(pod(0)), pod_facts(pod(1))], 2, 0, POLICY, NOW).recheck is None


def test_a_rank_not_yet_created_after_a_restart_is_not_a_deleted_one() -> None:
    """Seen on the sandbox: after an eviction restart, worker-1's name was still held by the
    terminating pod of attempt 0, worker-0 of attempt 1 already ran, and the gap was taken for
    a deleted rank: three restarts in 0.5 s and MaxRestartsReached."""
    only_rank_0 = [pod_facts(pod(0))]
    assert decide(only_rank_0, 2, 1, POLICY, NOW, ran_whole=False).action == "none"
    assert decide(only_rank_0, 2, 1, POLICY, NOW, ran_whole=True).action == "restart"
