"""What keeps one job's pods from reaching, or being, another's. Pure builders.

- `network_policy`: per job (deterministic name `<job>-ddp`, owned by the job, removed with
  it). Ingress to the job's pods: the rendezvous port (and every other port the ranks talk
  to each other on) only from the job's own pods; the metrics ports only from the
  monitoring namespace. Egress is left to the platform's own policies.
- `service_account`: one per namespace (`yolofit-trainer`), no token mounted. Trainer pods
  need no API access; without it they would run as the namespace's `default`
  ServiceAccount, which a platform may have granted rights. Not owned by a job (all jobs of
  the namespace use it, and the operator re-creates it before launching if it was
  removed); remove it by hand when yolofit leaves the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yolofit.operator.launch import (
    JOB_LABEL,
    METRICS_PORT,
    TRAINER_SERVICE_ACCOUNT,
    owner_reference,
    selector_labels,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def network_policy_name(job: str) -> str:
    return f"{job}-ddp"


def network_policy(job: Mapping[str, Any], monitoring_namespace: str,
                   metrics_port: int = METRICS_PORT, local_ranks: int = 16) -> dict[str, Any]:
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    own = {"podSelector": {"matchLabels": selector_labels(name)}}
    metrics = [{"protocol": "TCP", "port": metrics_port, "endPort": metrics_port + local_ranks - 1}]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": network_policy_name(name), "namespace": namespace,
                     "labels": {JOB_LABEL: name, "app.kubernetes.io/managed-by": "yolofit"},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                # Rendezvous (MASTER_PORT), NCCL/gloo peer ports: the job's own pods only.
                {"from": [own]},
                {"from": [{"namespaceSelector": {"matchLabels": {
                    NAMESPACE_NAME_LABEL: monitoring_namespace}}}], "ports": metrics},
            ],
        },
    }


def service_account(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "yolofit",
                                "app.kubernetes.io/component": "trainer"}},
        "automountServiceAccountToken": False,
    }
