"""The admission configuration objects, as data: the Mutating/ValidatingWebhookConfiguration
that route reviews to `admission_server`, and the ValidatingAdmissionPolicy that makes a
job's status writable only by the operator. The sandbox operator applies them itself
(`apply`); the Helm chart renders the same objects (charts/yolofit/templates/webhook.yaml,
statuspolicy.yaml) and tests/ship compares the two.

Why a ValidatingAdmissionPolicy for status and not a webhook or RBAC: RBAC cannot tell a
status write by the operator from one by a tenant who was granted `yolotrainingjobs/status`
(the "edit" aggregated role commonly grants `*/status`); a webhook on the status
subresource would put every status write of the operator through a network hop and fail
closed while no replica answers. A CEL policy runs inside the apiserver, needs no replica
up, and cannot be escaped by RBAC grants.

matchConditions keep the webhooks off what they need not see, so an operator outage blocks
as little as possible: metadata-only updates (labels, annotations, finalizers: the spec is
unchanged, so the plan is too) and the operator's own writes (its spec.plan mirror). The
failurePolicy stays Fail.
"""

from __future__ import annotations

import base64
from typing import Any

from yolofit.operator.api import GROUP, VERSION

SKIP_METADATA_ONLY = {
    "name": "spec-changed",
    "expression": "request.operation != 'UPDATE' || !has(object.spec) || "
                  "!has(oldObject.spec) || object.spec != oldObject.spec",
}


def skip_user(username: str) -> dict[str, str]:
    return {"name": "not-the-operator",
            "expression": f"request.userInfo.username != {cel_string(username)}"}


def cel_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _client(url: str | None, service: dict[str, Any] | None, path: str,
            ca_pem: bytes) -> dict[str, Any]:
    config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if service is not None:
        config["service"] = {**service, "path": path}
    else:
        config["url"] = f"{(url or '').rstrip('/')}{path}"
    return config


def _hook(name: str, resource: str, path: str, client: dict[str, Any],
          conditions: list[dict[str, str]], timeout: int) -> dict[str, Any]:
    return {
        "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": timeout,
        "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [resource],
                   "operations": ["CREATE", "UPDATE"], "scope": "*"}],
        "clientConfig": client, "matchConditions": conditions,
    }


def webhook_configurations(name: str, ca_pem: bytes, *, url: str | None = None,
                           service: dict[str, Any] | None = None,
                           operator_username: str = "",
                           timeout: int = 10) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration) named `name`."""
    jobs = [SKIP_METADATA_ONLY] + ([skip_user(operator_username)] if operator_username else [])

    def c(path: str) -> dict[str, Any]:
        return _client(url, service, path, ca_pem)

    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "yolofit"}},
        "webhooks": [{**_hook("plan.yolofit.io", "yolotrainingjobs", "/mutate", c("/mutate"),
                              jobs, timeout), "reinvocationPolicy": "Never"}],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "yolofit"}},
        "webhooks": [
            _hook("fit.yolofit.io", "yolotrainingjobs", "/validate", c("/validate"), jobs,
                  timeout),
            _hook("policy.yolofit.io", "gpucapacitypolicies", "/validate-policy",
                  c("/validate-policy"), [SKIP_METADATA_ONLY], timeout),
        ],
    }
    return mutating, validating


def status_policy(name: str, operator_username: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ValidatingAdmissionPolicy, binding): only `operator_username` writes job status."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "yolofit"}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["*"],
                "resources": ["yolotrainingjobs/status"], "operations": ["UPDATE"]}]},
            "validations": [{
                "expression": f"request.userInfo.username == {cel_string(operator_username)}",
                "message": "status of a YOLOTrainingJob is written by the yolofit operator "
                           "only (admission, quota and plan live there)",
                "reason": "Forbidden"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "yolofit"}},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return policy, binding


ADMISSION = "/apis/admissionregistration.k8s.io/v1"
PATHS = {"MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
         "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
         "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
         "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}


async def apply(api: Any, objects: list[dict[str, Any]]) -> None:
    """Create or replace each object (server-side apply, the operator as field manager)."""
    for obj in objects:
        path = f"{ADMISSION}/{PATHS[obj['kind']]}/{obj['metadata']['name']}"
        await api.call("PATCH", path, obj, "application/apply-patch+yaml",
                       query=[("fieldManager", "yolofit-operator"), ("force", "true")])


async def remove(api: Any, kinds: list[str], name: str) -> None:
    for kind in kinds:
        await api.delete(f"{ADMISSION}/{PATHS[kind]}/{name}")
