"""What the operator may do in the cluster: the ClusterRole rules, as data, so the chart and
its `kubectl auth can-i` tests use the one list the code needs (and nothing more)."""

from __future__ import annotations

from typing import Any

from yolofit.operator.api import GROUP

# Cluster-scoped objects and discovery: always a ClusterRole.
RULES: list[dict[str, Any]] = [
    # Policy: read; publish the discovered fleet and learned margins on its status.
    {"apiGroups": [GROUP], "resources": ["gpucapacitypolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["gpucapacitypolicies/status"],
     "verbs": ["get", "patch"]},
    # Fleet discovery from GPU Feature Discovery labels.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    # kopf: API discovery of CRDs and the namespaces it serves.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    # Webhook and status-policy configurations (the sandbox; the chart owns them instead).
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                   "validatingadmissionpolicies", "validatingadmissionpolicybindings"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    # kopf peering between replicas (leader election), when --peering is set.
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
     "verbs": ["get", "list", "watch", "patch"]},
]

# Where the jobs live: a ClusterRole when the operator serves the whole cluster, a Role in
# each served namespace when the chart is given a list (no cluster-wide pod access then).
# RBAC cannot say "only the pods this operator created": it matches verbs, resources and
# exact names, never labels or ownerReferences. The chart adds a ValidatingAdmissionPolicy
# (templates/admissionpolicies.yaml) that refuses the operator's pod updates and deletes
# unless the pod's controller is a YOLOTrainingJob; list/watch of pods stay namespace-wide.
WORKLOAD_RULES: list[dict[str, Any]] = [
    # Jobs: watch, write the plan mirror (spec.plan) and status.
    {"apiGroups": [GROUP], "resources": ["yolotrainingjobs"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": ["yolotrainingjobs/status"], "verbs": ["get", "patch"]},
    # Children: the worker pods (gates removed by patch), one headless Service, one
    # NetworkPolicy per job; one trainer ServiceAccount per namespace (no token mounted).
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # Services are watched: one deleted out of band is recreated.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create"]},
    # Gang scheduling (KEP-4671): one PodGroup per multi-pod job, where the API is served.
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["podgroups"], "verbs": ["get", "create"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
     "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create"]},
    # DRA-backed classes: one ResourceClaimTemplate per job attempt (sharing/dra.py).
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaimtemplates"],
     "verbs": ["get", "create"]},
    # Outputs: one PersistentVolumeClaim per job when the policy gives outputs.size.
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "create"]},
    # Events on jobs (kopf posts core/v1 Events).
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # Kueue (where installed): read the Workloads of Kueue-managed jobs' pod groups.
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"],
     "verbs": ["get", "list", "watch"]},
]

# In the operator's own namespace only (a Role): the learned-margins ConfigMap.
NAMESPACED_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
]
