"""What the operator may do in the cluster: the ClusterRole rules, as data, so the chart and
its `kubectl auth can-i` tests use the one list the code needs (and nothing more)."""

from __future__ import annotations

from typing import Any

from yolofit.operator.api import GROUP

RULES: list[dict[str, Any]] = [
    # Jobs: watch, write the plan (spec.plan) and status.
    {"apiGroups": [GROUP], "resources": ["yolotrainingjobs"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": ["yolotrainingjobs/status"], "verbs": ["get", "patch"]},
    # Policy: read; publish the discovered fleet and learned margins on its status.
    {"apiGroups": [GROUP], "resources": ["gpucapacitypolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["gpucapacitypolicies/status"],
     "verbs": ["get", "patch"]},
    # Children: one headless Service and the worker pods of each job (gates removed by patch).
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "create"]},
    # DRA-backed classes: one ResourceClaimTemplate per job attempt (sharing/dra.py).
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaimtemplates"],
     "verbs": ["get", "create"]},
    # Fleet discovery from GPU Feature Discovery labels.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    # Events on jobs (kopf posts core/v1 Events).
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf: API discovery of CRDs and the namespaces it serves.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    # kopf-managed webhook configurations (caBundle and rules kept current).
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    # kopf peering between replicas (leader election), when --peering is set.
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
     "verbs": ["get", "list", "watch", "patch"]},
]

# In the operator's own namespace only (a Role): the learned-margins ConfigMap.
NAMESPACED_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
]
