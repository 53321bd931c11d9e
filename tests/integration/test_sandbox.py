"""The sandbox is a real control plane: the real scheduler binds GPU pods to the
simulated fleet, the controller-manager runs Deployments, kwok runs and ends pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from yolofit.sandbox.testing import finish_pod, sim_exit_annotations, wait_for

pytestmark = pytest.mark.integration

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# The session's sandbox is shared: other tests may add nodes, so these tests look at
# the default fleet's nodes (deploy/fleet.yaml) only.
DEFAULT_GROUPS = ["t4", "a100", "h100", "h200"]
DEFAULT_NODES = {"t4-0", "t4-1", "t4-2", "t4-3", "a100-0", "a100-1", "h100-0", "h100-1", "h200-0"}
ON_DEFAULT_FLEET = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "yolofit.io/node-group", "operator": "In", "values": DEFAULT_GROUPS}
                    ]
                }
            ]
        }
    }
}


def gpu_pod(
    name: str, gpus: int, product: str | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "train",
                "image": "ghcr.io/yolofit/trainer:test",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
        "tolerations": [GPU_TOLERATION],
    }
    if product:
        spec["nodeSelector"] = {"nvidia.com/gpu.product": product}
    else:
        spec["affinity"] = ON_DEFAULT_FLEET
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def running_pod(kube: Any, namespace: str, name: str) -> Any:
    return wait_for(
        lambda: (p := kube.read_namespaced_pod(name, namespace)).status.phase == "Running" and p,
        timeout=30,
        what=f"pod {name} Running",
    )


def test_fleet_is_labelled_like_gpu_feature_discovery(kube: Any, kubectl: Any) -> None:
    nodes = {n.metadata.name: n for n in kube.list_node(label_selector="type=kwok").items}
    assert DEFAULT_NODES <= set(nodes)
    t4 = nodes["t4-0"]
    assert t4.metadata.labels["nvidia.com/gpu.product"] == "Tesla-T4"
    assert t4.metadata.labels["nvidia.com/gpu.memory"] == "15360"
    assert t4.metadata.labels["nvidia.com/gpu.family"] == "turing"
    assert t4.status.allocatable["nvidia.com/gpu"] == "4"
    assert [(t.key, t.value, t.effect) for t in t4.spec.taints] == [
        ("nvidia.com/gpu", "present", "NoSchedule")
    ]
    out = kubectl("get", "nodes", "-L", "nvidia.com/gpu.product,nvidia.com/gpu.memory").stdout
    assert "NVIDIA-H200" in out and "143771" in out
    assert "v1.37.2" in kubectl("version", "-o", "json").stdout


def test_one_gpu_pod_is_scheduled_to_a_t4_and_runs(kube: Any, namespace: str) -> None:
    kube.create_namespaced_pod(namespace, gpu_pod("one-gpu", 1, product="Tesla-T4"))
    pod = running_pod(kube, namespace, "one-gpu")
    assert pod.spec.node_name.startswith("t4-")
    node = kube.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == "Tesla-T4"
    assert pod.status.container_statuses[0].ready


def test_nine_gpus_stay_pending_with_the_schedulers_reason(kube: Any, namespace: str) -> None:
    kube.create_namespaced_pod(namespace, gpu_pod("nine-gpus", 9))

    def unschedulable() -> Any:
        pod = kube.read_namespaced_pod("nine-gpus", namespace)
        return next(
            (
                c
                for c in pod.status.conditions or []
                if c.type == "PodScheduled" and c.reason == "Unschedulable"
            ),
            None,
        )

    cond = wait_for(unschedulable, timeout=30, what="PodScheduled=False/Unschedulable")
    assert cond.status == "False"
    assert "Insufficient nvidia.com/gpu" in cond.message
    assert kube.read_namespaced_pod("nine-gpus", namespace).status.phase == "Pending"


def test_deployment_creates_replicaset_and_running_pods(
    kube_client: Any, kube: Any, namespace: str
) -> None:
    from kubernetes.client import AppsV1Api

    apps = AppsV1Api(kube_client)
    template = gpu_pod("x", 1)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
            },
        },
    )
    rs = wait_for(
        lambda: apps.list_namespaced_replica_set(namespace).items, timeout=30, what="a ReplicaSet"
    )
    assert rs[0].metadata.owner_references[0].name == "web"
    wait_for(
        lambda: apps.read_namespaced_deployment("web", namespace).status.available_replicas == 2,
        timeout=45,
        what="2 available replicas",
    )
    pods = kube.list_namespaced_pod(namespace, label_selector="app=web").items
    assert sorted(p.status.phase for p in pods) == ["Running", "Running"]


def test_pod_driven_to_failed_with_exit_code_137(kube: Any, namespace: str) -> None:
    kube.create_namespaced_pod(namespace, gpu_pod("oom", 1))
    running_pod(kube, namespace, "oom")
    finish_pod(kube, namespace, "oom", 137, reason="OOMKilled")
    pod = wait_for(
        lambda: (p := kube.read_namespaced_pod("oom", namespace)).status.phase == "Failed" and p,
        timeout=30,
        what="pod Failed",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


def test_pod_succeeds_with_a_termination_message(kube: Any, namespace: str) -> None:
    summary = json.dumps(
        {
            "rank": 0,
            "exit_reason": "completed",
            "message": 'a "quoted"\nline',
            "peak_reserved_bytes": 5 * 2**30,
        }
    )
    kube.create_namespaced_pod(
        namespace, gpu_pod("done", 1, annotations=sim_exit_annotations(0, message=summary))
    )
    pod = wait_for(
        lambda: (
            (p := kube.read_namespaced_pod("done", namespace)).status.phase == "Succeeded" and p
        ),
        timeout=30,
        what="pod Succeeded",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert json.loads(terminated.message) == json.loads(summary)


def test_deleted_pod_on_a_fake_node_goes_away(kube: Any, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    kube.create_namespaced_pod(namespace, gpu_pod("gone", 1))
    running_pod(kube, namespace, "gone")
    kube.delete_namespaced_pod("gone", namespace)

    def deleted() -> bool:
        try:
            kube.read_namespaced_pod("gone", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(deleted, timeout=30, what="pod deleted")


def test_a_second_sandbox_does_not_collide(sandbox: Any, kube: Any) -> None:
    from yolofit.sandbox import Fleet, Sandbox

    if not isinstance(sandbox, Sandbox):
        pytest.skip("needs a sandbox started by the tests")
    fleet = Fleet.model_validate(
        {
            "nodeGroups": [
                {
                    "name": "mini",
                    "count": 1,
                    "gpu_product": "Tesla-T4",
                    "gpu_memory_mib": 15360,
                    "gpus": 1,
                    "gpu_family": "turing",
                }
            ]
        }
    )
    other = Sandbox.up(fleet=fleet, ephemeral=True)
    try:
        assert set(other.ports.to_dict().values()).isdisjoint(sandbox.ports.to_dict().values())
        assert other.dir != sandbox.dir
        client = other.api_client()
        from kubernetes.client import CoreV1Api

        names = [n.metadata.name for n in CoreV1Api(client).list_node().items]
        client.close()
        assert names == ["mini-0"]
    finally:
        other.down()
    assert not other.dir.exists()
    assert not any(p.alive() for p in other.procs)
    still = {n.metadata.name for n in kube.list_node(label_selector="type=kwok").items}
    assert DEFAULT_NODES <= still
