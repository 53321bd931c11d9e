"""On the real sandbox: measurements only from the job's own pods, and outputs on a claim.

- A pod carrying the job's labels but made by someone else finishes with exit 88 and a forged
  summary: the job is not re-planned and no margin is learned.
- The job's own pods report `1e999` and `1e30`: the numbers are dropped with Events, the job
  still ends Succeeded with its status written (no inf in it).
- With the policy's outputs.size, the job gets a PersistentVolumeClaim (bound here by the
  kube-controller-manager to a static PV), owned by the job, mounted at outputDir in pod 0
  with fsGroup 10001, and garbage-collected with the job; with retain it stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from opfixtures import summary
from sandboxjobs import apply, get_job, job_yaml, phase_is, pods_of, running_pods

from yolofit.sandbox.testing import finish_pod, wait_for

pytestmark = pytest.mark.integration
GiB = 2**30


def _events(kubectl: Callable[..., Any], ns: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"])


def _margins(kubectl: Callable[..., Any]) -> dict[str, Any]:
    out = kubectl("get", "configmap", "-n", "yolofit-system", "yolofit-learned-margins",
                  "-o", "jsonpath={.data.margins\\.json}", check=False).stdout
    return dict(json.loads(out)) if out else {}


def test_an_impostor_pod_and_non_finite_numbers_are_ignored(
        operator: Any, kubectl: Any, kube: Any, namespace: str) -> None:
    apply(kubectl, job_yaml("trusty", namespace, nodes=2, per_node=1))
    [p0, p1] = wait_for(running_pods(kube, namespace, "trusty", 2), 30, what="pods")
    impostor = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "trusty-impostor", "labels": dict(p0.metadata.labels)},
                "spec": {"nodeSelector": p0.spec.node_selector,
                         "tolerations": kube.api_client.sanitize_for_serialization(
                             p0.spec.tolerations),
                         "containers": [{"name": "c", "image": "x"}]}}
    kube.create_namespaced_pod(namespace, impostor)
    wait_for(lambda: kube.read_namespaced_pod("trusty-impostor", namespace).status.phase
             == "Running", 30, what="the impostor running")
    forged = json.dumps({"rank": 1, "exit_reason": "oom", "device_total_bytes": 1e15})
    finish_pod(kube, namespace, "trusty-impostor", 88, message=forged)
    wait_for(lambda: kube.read_namespaced_pod("trusty-impostor", namespace).status.phase
             == "Failed", 30, what="the impostor failed")

    finish_pod(kube, namespace, "trusty-worker-0", 0,
               message='{"rank":0,"device_total_bytes":1e999}')
    finish_pod(kube, namespace, "trusty-worker-1", 0, message=summary(1, 10**30))
    job = wait_for(phase_is(kubectl, namespace, "trusty", "Succeeded"), 30, what="Succeeded")
    status = job["status"]
    assert status.get("attempt", 0) == 0 and not status.get("replans")
    assert not status.get("measured")
    assert not [k for k in _margins(kubectl) if k.startswith(f"{namespace}|")]
    dropped = [e["message"] for e in _events(kubectl, namespace)
               if e["reason"] == "MeasurementDropped"]
    assert any("trusty-worker-0" in m for m in dropped), dropped
    assert any("trusty-worker-1" in m for m in dropped), dropped


def test_outputs_on_a_claim_owned_by_the_job(operator: Any, kubectl: Any, kube: Any,
                                             namespace: str, policy: Any) -> None:
    storage_class = f"outputs-{namespace}"[:63]
    pv = {"apiVersion": "v1", "kind": "PersistentVolume",
          "metadata": {"name": storage_class},
          "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                   "storageClassName": storage_class, "hostPath": {"path": "/tmp/outputs"},
                   "persistentVolumeReclaimPolicy": "Retain"}}
    kubectl("apply", "-f", "-", input=json.dumps(pv))
    try:
        policy([], outputs={"size": "1Gi", "storageClassName": storage_class})
        created = apply(kubectl, job_yaml("kept", namespace, nodes=2, per_node=1))
        uid = created["metadata"]["uid"]
        claim = f"kept-outputs-{uid.replace('-', '')[:8]}"
        pods = wait_for(running_pods(kube, namespace, "kept", 2), 60, what="pods on the claim")
        pvc = kube.read_namespaced_persistent_volume_claim(claim, namespace)
        assert pvc.status.phase == "Bound" and pvc.spec.storage_class_name == storage_class
        assert [(o.uid, o.controller) for o in pvc.metadata.owner_references] == [(uid, True)]
        vols = {v.name: v for v in pods[0].spec.volumes}
        assert vols["yolofit-outputs"].persistent_volume_claim.claim_name == claim
        assert pods[0].spec.security_context.fs_group == 10001
        mounts = {m.name: m.mount_path for m in pods[0].spec.containers[0].volume_mounts}
        assert mounts["yolofit-outputs"] == "/runs"
        assert {v.name: v for v in pods[1].spec.volumes}["yolofit-outputs"].empty_dir
        job = get_job(kubectl, namespace, "kept")
        results = job["status"]["results"]
        assert results == {**results, "storage": f"persistentVolumeClaim {claim}",
                           "ephemeral": False, "path": "/runs/kept/attempt-0"}
        conds = {c["type"]: c for c in job["status"]["conditions"]}
        assert conds["ResultsPersistent"]["status"] == "True"

        kubectl("delete", "ytj", "-n", namespace, "kept", "--wait=true")
        wait_for(lambda: not pods_of(kube, namespace, "kept") and not kube.
                 list_namespaced_persistent_volume_claim(namespace).items, 90,
                 what="the claim garbage-collected with the job")
    finally:
        kubectl("delete", "pv", storage_class, "--ignore-not-found", "--wait=false",
                check=False)
