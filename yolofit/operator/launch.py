"""Pure builders of a job's children: one headless Service and one pod per node.

Why pods and not an Indexed Job: the names must be deterministic (`<job>-worker-<i>`, so a
restarted operator finds exactly the pods it made and never duplicates one), each pod is
gated individually (`schedulingGates`) and removed only when the whole gang exists, an OOM
re-plan relaunches the same names with a new plan (a Job's pod template is immutable), and
one controller hop less keeps apply-to-pods latency low. Ranks get stable DNS names through
`hostname` + `subdomain` and the headless Service, as an Indexed Job's pods would.

The DDP environment is the one Kubeflow's PyTorchJob sets (RANK is the node rank and
WORLD_SIZE = nodes x GPUs per node; torchrun/`yolofit train` derive per-process ranks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from yolofit.operator import weights
from yolofit.operator.api import API_VERSION, OutputStorage, Plan, YOLOTrainingJobSpec
from yolofit.operator.storage import Storage, plan_storage, pod_volumes

GANG_GATE = "yolofit.io/gang"
JOB_LABEL = "yolofit.io/job"
RANK_LABEL = "yolofit.io/rank"
ATTEMPT_LABEL = "yolofit.io/attempt"
CLASS_LABEL = "yolofit.io/gpu-class"
METRICS_LABEL = "yolofit.io/metrics"
COMPONENT_LABEL = "app.kubernetes.io/component"
MASTER_PORT = 23456  # PyTorchJob's default
METRICS_PORT = 9400
MAX_JOB_NAME = 48  # "<job>-worker-<i>" must stay a 63-character DNS label
TRAINER_SERVICE_ACCOUNT = "yolofit-trainer"  # isolation.service_account, one per namespace
TRAINER_UID = 10001  # the trainer image's USER (Dockerfile)
# Pod Security Standard "restricted": non-root, no privilege escalation, no capabilities,
# the runtime's default seccomp profile. Trainer pods need nothing more.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
    "fsGroup": TRAINER_UID, "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def worker_name(job: str, index: int) -> str:
    return f"{job}-worker-{index}"


def service_name(job: str) -> str:
    return job


def master_addr(job: str, namespace: str) -> str:
    """Rank 0's DNS name through the headless Service (hostname.subdomain.ns.svc)."""
    return f"{worker_name(job, 0)}.{service_name(job)}.{namespace}.svc"


def owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {"apiVersion": API_VERSION, "kind": "YOLOTrainingJob", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def selector_labels(job: str) -> dict[str, str]:
    return {JOB_LABEL: job}


def build_service(job: Mapping[str, Any]) -> dict[str, Any]:
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": job["metadata"]["namespace"],
                     "labels": {**selector_labels(name), COMPONENT_LABEL: "rendezvous"},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": selector_labels(name),
                 "ports": [{"name": "ddp", "port": MASTER_PORT, "targetPort": MASTER_PORT}]},
    }


def train_config(name: str, namespace: str, spec: YOLOTrainingJobSpec, plan: Plan,
                 attempt: int, metrics_port: int = METRICS_PORT) -> dict[str, Any]:
    """What reaches `yolofit train` as YOLOFIT_TRAIN_CONFIG (ARCHITECTURE.md contract)."""
    arch = weights.architecture(spec)  # a .pt spec.model: its name's architecture
    model = arch if arch.endswith((".yaml", ".yml", ".pt")) else f"{arch}.yaml"
    return {
        "model": model, "weights": weights.checkpoint(spec), "classes": spec.classes,
        "data": spec.data, "imgsz": plan.imgsz, "epochs": spec.epochs,
        "batch_per_gpu": plan.batch_per_gpu, "nbs": spec.nbs, "accumulate": plan.accumulate,
        "amp": plan.amp, "checkpointing": plan.checkpointing, "optimizer": spec.optimizer,
        "args": dict(spec.args), "namespace": namespace, "job": name,
        "gpu_class": plan.gpu_class, "estimate_bytes": plan.predicted_device_bytes,
        "metrics_port": metrics_port, "project": spec.output_dir, "name": name,
        "attempt": attempt, "world_size": plan.gpus, "nodes": plan.nodes,
        "gpus_per_node": plan.gpus_per_node, "task": plan.task or spec.task,
        "objects_per_image": plan.objects_per_image or None,
        "mean_objects_per_image": plan.mean_objects_per_image or None,
    }


def metrics_ports(base: int, local_ranks: int) -> list[dict[str, Any]]:
    """Local rank r serves /metrics on base + r: `metrics`, `metrics-1`, ... (the PodMonitor
    scrapes every port named metrics*)."""
    return [{"name": "metrics" if r == 0 else f"metrics-{r}", "containerPort": base + r}
            for r in range(local_ranks)]


def ddp_env(name: str, namespace: str, plan: Plan, rank: int) -> list[dict[str, str]]:
    addr, port = master_addr(name, namespace), str(MASTER_PORT)
    pairs = [
        ("MASTER_ADDR", addr), ("MASTER_PORT", port), ("WORLD_SIZE", str(plan.gpus)),
        ("RANK", str(rank)), ("PET_MASTER_ADDR", addr), ("PET_MASTER_PORT", port),
        ("PET_NNODES", str(plan.nodes)), ("PET_NPROC_PER_NODE", str(plan.gpus_per_node)),
        ("PET_NODE_RANK", str(rank)),
    ]
    return [{"name": k, "value": v} for k, v in pairs]


def build_pod(job: Mapping[str, Any], spec: YOLOTrainingJobSpec, plan: Plan, rank: int,
              attempt: int, node_selector: Mapping[str, str],
              tolerations: list[dict[str, Any]], metrics_port: int = METRICS_PORT,
              gated: bool = True, outputs: Storage | None = None) -> dict[str, Any]:
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    outputs = outputs or plan_storage(job, spec, OutputStorage())
    out_volumes, out_mounts, out_security = pod_volumes(outputs, spec, rank)
    config = train_config(name, namespace, spec, plan, attempt, metrics_port)
    env = ddp_env(name, namespace, plan, rank) + [
        {"name": "YOLOFIT_TRAIN_CONFIG", "value": json.dumps(config, sort_keys=True)},
        {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
        {"name": "YOLO_OFFLINE", "value": "1"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    gpu = str(plan.gpus_per_node)
    resources = {"cpu": spec.resources.cpu, "memory": spec.resources.memory,
                 "nvidia.com/gpu": gpu}
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": worker_name(name, rank), "namespace": namespace,
            "labels": {**selector_labels(name), RANK_LABEL: str(rank),
                       ATTEMPT_LABEL: str(attempt), CLASS_LABEL: plan.gpu_class,
                       METRICS_LABEL: "true", COMPONENT_LABEL: "trainer",
                       "app.kubernetes.io/name": "yolofit-trainer",
                       "app.kubernetes.io/managed-by": "yolofit"},
            "annotations": {"prometheus.io/scrape": "true",
                            "prometheus.io/port": str(metrics_port),
                            "prometheus.io/path": "/metrics"},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": json.loads(json.dumps(POD_SECURITY)),
            "hostname": worker_name(name, rank),
            "subdomain": service_name(name),
            "nodeSelector": dict(node_selector),
            "tolerations": [dict(t) for t in tolerations],
            "containers": [{
                "name": "trainer", "image": spec.image, "command": ["yolofit", "train"],
                "env": env, "securityContext": json.loads(json.dumps(CONTAINER_SECURITY)),
                "ports": [*metrics_ports(metrics_port, plan.gpus_per_node),
                          {"name": "ddp", "containerPort": MASTER_PORT}],
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                 *[dict(m) for m in spec.volume_mounts], *out_mounts],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory",
                                                      "sizeLimit": spec.resources.shm}},
                        *[dict(v) for v in spec.volumes], *out_volumes],
        },
    }
    for key, value in out_security.items():  # the outputs volume writable for the trainer
        pod["spec"].setdefault("securityContext", {}).setdefault(key, value)
    if gated:
        pod["spec"]["schedulingGates"] = [{"name": GANG_GATE}]
    return pod


def desired_pod_names(name: str, plan: Plan) -> list[str]:
    return [worker_name(name, i) for i in range(plan.nodes)]


def waiting_message(plan: Plan) -> str:
    """One message for every step from launch to all pods running, so that each pod that
    starts does not cost a status write."""
    return f"waiting for {plan.nodes} pods to run on {plan.gpu_class}"
