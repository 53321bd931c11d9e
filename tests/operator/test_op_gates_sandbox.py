"""The fallback for clusters without PodGroups, on the real sandbox: the operator forced to
`gang_scheduling=gates` holds each gang behind its scheduling gates until the placement
check says the whole gang fits. Two 2-node jobs on one 2-node pool: one runs whole, the
other keeps every gate (nothing bound) until the first ends - no partial gang, no
deadlock."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sandboxjobs import (
    apply,
    bound,
    finish_all,
    gang_waits,
    job_yaml,
    phase_is,
    pods_of,
    running_pods,
)

from yolofit.sandbox.testing import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"YOLOFIT_OPERATOR_GANG_SCHEDULING": "gates"}


def test_gates_hold_the_second_gang_whole_until_the_first_ends(
        operator: Any, kubectl: Any, kube: Any, namespace: str) -> None:
    assert "scheduling gates + placement check" in operator.log_path.read_text()
    for name in ("first", "second"):
        apply(kubectl, job_yaml(name, namespace, nodes=2, per_node=8, gpuClass="h100-80gb"))
        time.sleep(1)  # first is older: its gang is checked and released first
    wait_for(running_pods(kube, namespace, "first", 2), 60, what="first placed whole")
    job = wait_for(gang_waits(kubectl, kube, namespace, "second", 2), 60, what="second Queued")
    assert "needs 2 nodes with 8 free GPUs each, 0 of 2 have that now" in job["status"]["message"]
    for pod in pods_of(kube, namespace, "second"):
        assert [g.name for g in pod.spec.scheduling_gates] == ["yolofit.io/gang"]
        assert pod.spec.scheduling_group is None
    time.sleep(2)
    assert bound(kube, namespace, "second") == []
    finish_all(kube, namespace, "first")
    released = time.monotonic()
    wait_for(running_pods(kube, namespace, "second", 2), 60, what="second placed after first")
    print(f"\n[gates] second gang placed {time.monotonic() - released:.1f}s after the first ended")
    finish_all(kube, namespace, "second")
    wait_for(phase_is(kubectl, namespace, "second", "Succeeded"), 60, what="second Succeeded")
