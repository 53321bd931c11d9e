"""Two operator replicas with kopf peering on the real sandbox: only the leader admits, a
standby takes over (re-listing first) when the leader is SIGKILLed, and at no moment are
more GPUs admitted in the namespace than the policy's maxGpusAdmitted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandboxjobs import finish_all, get_job, job_yaml, pods_of

from yolofit.sandbox.testing import wait_for

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
REPO = HERE.parents[1]
PEERING = "yolofit-peering-test"
LIMIT = 8


@pytest.fixture
def replicas(sandbox: Any, crds: None, kubectl: Any, profile_dir: Path,
             tmp_path: Path) -> Iterator[list[Any]]:
    from yolofit.operator.testing import OperatorProcess

    kubectl("apply", "-f", str(REPO / "charts" / "yolofit" / "crds" / "kopf-peering.yaml"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev")
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING}}))
    kubectl("create", "namespace", "yolofit-system", check=False)
    ops = [OperatorProcess(sandbox.kubeconfig, tmp_path / f"op-{prio}", install_webhooks=False,
                           extra_args=["--peering", PEERING],
                           env={"YOLOFIT_PROFILE_DIR": str(profile_dir),
                                "YOLOFIT_OPERATOR_QUEUE_INTERVAL": "0.5",
                                "YOLOFIT_OPERATOR_PEERING_PRIORITY": str(prio),
                                "YOLOFIT_OPERATOR_PEERING_LIFETIME": "10",
                                "PYTHONPATH": str(HERE)})
           for prio in (200, 100)]
    for op in ops:
        op.start()
    try:
        yield ops
    finally:
        for op in ops:
            op.stop()
        kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found", check=False)


def test_two_replicas_never_admit_past_the_quota(replicas: list[Any], kubectl: Any, kube: Any,
                                                 namespace: str) -> None:
    policy = {"apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
              "metadata": {"name": "default"},
              "spec": {"namespaces": [{"namespace": namespace, "maxGpusAdmitted": LIMIT}]}}
    kubectl("apply", "-f", "-", input=json.dumps(policy))
    time.sleep(2)  # both replicas read the policy (the standby through its fleet refresh)
    names = [f"j{i}" for i in range(6)]
    peaks: list[int] = []
    stop = threading.Event()

    def admitted_now() -> int:
        items = json.loads(kubectl("get", "ytj", "-n", namespace, "-o", "json").stdout)["items"]
        return sum(j["spec"]["gpus"]["nodes"] * j["spec"]["gpus"]["perNode"] for j in items
                   if (j.get("status") or {}).get("admitted")
                   and j["status"].get("phase") not in ("Succeeded", "Failed"))

    def watch() -> None:
        while not stop.is_set():
            peaks.append(admitted_now())
            time.sleep(0.2)

    sampler = threading.Thread(target=watch, daemon=True)
    sampler.start()
    try:
        for name in names:
            kubectl("apply", "-f", "-", input=job_yaml(name, namespace, nodes=1, per_node=4))
        wait_for(lambda: admitted_now() == LIMIT, 60, what="the quota filled")
        done: set[str] = set()

        def finish_admitted() -> None:
            for name in names:
                st = get_job(kubectl, namespace, name).get("status") or {}
                if name not in done and st.get("phase") == "Running":
                    finish_all(kube, namespace, name)
                    done.add(name)

        finish_admitted()
        replicas[0].kill()  # the leader dies; the standby takes over after the lifetime
        try:
            wait_for(lambda: (finish_admitted(), len(done) == len(names))[1], 120,
                     what="every job run, the standby admitting after the takeover")
        except AssertionError as e:
            states = {n: (get_job(kubectl, namespace, n).get("status") or {}) for n in names}
            raise AssertionError(f"{e}\njobs: {json.dumps(states, indent=1)}\n"
                                 f"leader log:\n{replicas[0].log_tail(40)}\n"
                                 f"standby log:\n{replicas[1].log_tail(160)}") from None
        for name in names:
            wait_for(lambda n=name: (get_job(kubectl, namespace, n).get("status") or {}).get(
                "phase") == "Succeeded", 60, what=f"{name} Succeeded")
    finally:
        stop.set()
        sampler.join(timeout=5)
        kubectl("delete", "gpucapacitypolicy", "default", "--ignore-not-found", check=False)
    assert peaks and max(peaks) <= LIMIT, f"admitted past {LIMIT}: peak {max(peaks)}"
    assert all(len(pods_of(kube, namespace, n)) == 1 for n in names)  # none launched twice
    log = replicas[1].log_path.read_text(errors="replace")
    assert "this replica leads now; re-listing before acting" in log
    # a standby holds no trace server (~700 MiB with the real builder) until it leads
    assert log.find("trace workers fork from a server") > log.index(
        "this replica leads now; re-listing before acting")
