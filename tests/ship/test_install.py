"""The chart on the real control plane: server-side dry run, a real `helm install`/`upgrade`,
and the operator run with the chart ServiceAccount's own token to prove its RBAC is enough
and not more.

The Deployment's pods cannot run under kwok, so `yolofit operator` runs here as a process with
the ServiceAccount's credentials (TokenRequest via `kubectl create token`). The release's
webhooks are scoped by namespaceSelector to a label no namespace has: they are installed and
validated by the apiserver, but do not intercept other tests' jobs (their Service has no
reachable endpoint here).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolofit.sandbox import testing

from .conftest import CHART, ROOT

pytestmark = pytest.mark.integration

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
GiB, MiB = 1 << 30, 1 << 20


@dataclass
class Release:
    name: str
    namespace: str
    fullname: str
    helm: Callable[..., subprocess.CompletedProcess[str]]

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


def inert_webhook_values(tag: str) -> list[str]:
    return ["--set", f"webhook.namespaceSelector.matchLabels.yolofit\\.io/ship-webhook={tag}"]


@pytest.fixture
def release(helm: str, sandbox: Any, namespace: str, kubectl: Kubectl,
            tmp_path: Path) -> Iterator[Release]:
    name = f"ship-{secrets.token_hex(3)}"
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([helm, f"--kubeconfig={sandbox.kubeconfig}", "-n", namespace,
                                 *args], capture_output=True, text=True, env=env, check=False,
                                timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
        return result

    rel = Release(name, namespace, f"{name}-yolofit", run)
    try:
        yield rel
    finally:
        run("uninstall", name, "--wait", "--timeout=60s", check=False)


def apply_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/yolotrainingjobs.yolofit.io", "crd/gpucapacitypolicies.yolofit.io",
            "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")


def test_rendered_chart_and_plain_manifests_pass_a_server_side_dry_run(
        helm: str, kubectl: Kubectl, namespace: str) -> None:
    apply_crds(kubectl)
    for extra in ([], ["--set", "gpuCapacityPolicy.create=true",
                       "--set", "gpuCapacityPolicy.name=ship-dry-run",
                       "--set", "gpuCapacityPolicy.spec.classes[0].name=t4",
                       "--set", "gpuCapacityPolicy.spec.levers.imgszReduction=true"]):
        rendered = subprocess.run(
            [helm, "template", "dry", str(CHART), "-n", namespace, *extra],
            capture_output=True, text=True, check=True).stdout
        out = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stdout
        assert "(server dry run)" in out and "deployment.apps/dry-yolofit created" in out, out
    # deploy/manifests, in this test's namespace (a dry run does not create yolofit-system),
    # without cert-manager's kinds (no cert-manager in the sandbox).
    text = (ROOT / "deploy/manifests/yolofit.yaml").read_text().replace("yolofit-system", namespace)
    docs = [d for d in yaml.safe_load_all(text)
            if d and d["kind"] != "Namespace"
            and not d["apiVersion"].startswith("cert-manager.io/")]
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    assert "deployment.apps/yolofit created (server dry run)" in out, out


def test_operator_pod_is_admitted_under_pod_security_restricted(
        render: Callable[..., list[dict[str, Any]]], kubectl: Kubectl, namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    (deploy,) = [o for o in render() if o["kind"] == "Deployment"]
    kubectl("create", "serviceaccount", deploy["spec"]["template"]["spec"]["serviceAccountName"],
            "-n", namespace)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-pss"},
           "spec": deploy["spec"]["template"]["spec"]}
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                     input=json.dumps(pod), check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    insecure = json.loads(json.dumps(pod))
    insecure["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                      input=json.dumps(insecure), check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr  # PSA is really enforcing


def test_helm_install_then_upgrade_keeps_the_webhook_ca(release: Release, kubectl: Kubectl,
                                                         kube: Any) -> None:
    apply_crds(kubectl)
    values = inert_webhook_values(release.name)
    release.helm("install", release.name, str(CHART), *values)
    secret = kube.read_namespaced_secret(f"{release.fullname}-webhook-tls", release.namespace)
    ca = secret.data["ca.crt"]
    hooks = json.loads(kubectl("get", "mutatingwebhookconfiguration", release.fullname,
                               "-o", "json").stdout)["webhooks"]
    assert hooks[0]["clientConfig"]["caBundle"] == ca
    kubectl("get", "clusterkopfpeering", release.fullname)
    kubectl("get", "-n", release.namespace, "deployment", release.fullname)

    release.helm("upgrade", release.name, str(CHART), *values)
    again = kube.read_namespaced_secret(f"{release.fullname}-webhook-tls", release.namespace)
    assert again.data == secret.data  # lookup reused the certificate and key
    hooks = json.loads(kubectl("get", "validatingwebhookconfiguration", release.fullname,
                               "-o", "json").stdout)["webhooks"]
    assert hooks[0]["clientConfig"]["caBundle"] == ca
    status = release.helm("status", release.name, "-o", "json").stdout
    assert json.loads(status)["version"] == 2


# What `yolofit operator` does in the cluster, and what it must never be able to do.
ALLOWED = [
    ("watch", "yolotrainingjobs.yolofit.io", "--all-namespaces"),
    ("patch", "yolotrainingjobs.yolofit.io", "-n=team-x"),
    ("patch", "yolotrainingjobs.yolofit.io/status", "-n=team-x"),
    ("list", "gpucapacitypolicies.yolofit.io", ""),
    ("patch", "gpucapacitypolicies.yolofit.io/status", ""),
    ("create", "pods", "-n=team-x"),
    ("patch", "pods", "-n=team-x"),
    ("delete", "pods", "-n=team-x"),
    ("create", "services", "-n=team-x"),
    ("create", "networkpolicies.networking.k8s.io", "-n=team-x"),
    ("create", "serviceaccounts", "-n=team-x"),
    ("create", "events", "-n=team-x"),
    ("create", "events.events.k8s.io", "-n=team-x"),
    ("list", "nodes", ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("patch", "clusterkopfpeerings.kopf.dev", ""),
    ("create", "configmaps", "-n={ns}"),
    ("patch", "configmaps", "-n={ns}"),
]
FORBIDDEN = [
    ("get", "secrets", "-n=team-x"),
    ("list", "secrets", "--all-namespaces"),
    ("get", "secrets", "-n={ns}"),  # the webhook certificate is mounted, never read via the API
    ("delete", "nodes", ""),
    ("patch", "nodes", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", "-n={ns}"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("create", "pods/exec", "-n=team-x"),
    ("get", "pods/log", "-n=team-x"),
    ("update", "nodes/status", ""),
    ("impersonate", "serviceaccounts", "-n=team-x"),
    ("create", "configmaps", "-n=team-x"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "deployments.apps", "-n={ns}"),
    ("delete", "namespaces", ""),
    ("create", "serviceaccounts/token", "-n=team-x"),
    ("delete", "networkpolicies.networking.k8s.io", "-n=team-x"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io", ""),
]
# With operator.namespaces=[team-x]: pods and jobs there only, nothing cluster-wide.
NAMESPACED_ALLOWED = [("create", "pods", "-n=team-x"), ("patch", "pods", "-n=team-x"),
                      ("watch", "yolotrainingjobs.yolofit.io", "-n=team-x"),
                      ("list", "nodes", "")]
NAMESPACED_FORBIDDEN = [("create", "pods", "-n=team-y"), ("patch", "pods", "-n=team-y"),
                        ("patch", "pods", "--all-namespaces"),
                        ("create", "pods", "--all-namespaces"),
                        ("list", "secrets", "-n=team-x"),
                        ("patch", "yolotrainingjobs.yolofit.io/status", "-n=team-y")]


def can_i(kubectl: Kubectl, release: Release, verb: str, resource: str, scope: str) -> bool:
    resource, _, subresource = resource.partition("/")  # kubectl reads TYPE/NAME, not TYPE/SUB
    args = ["auth", "can-i", verb, resource, f"--as={release.service_account}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    if scope:
        args.append(scope.format(ns=release.namespace))
    result = kubectl(*args, check=False)
    return result.stdout.strip() == "yes"


def test_service_account_can_do_what_the_operator_needs_and_no_more(
        release: Release, kubectl: Kubectl) -> None:
    apply_crds(kubectl)
    release.helm("install", release.name, str(CHART), *inert_webhook_values(release.name))
    missing = [c for c in ALLOWED if not can_i(kubectl, release, *c)]
    extra = [c for c in FORBIDDEN if can_i(kubectl, release, *c)]
    assert not missing, f"the operator's ServiceAccount lacks {missing}"
    assert not extra, f"the operator's ServiceAccount may {extra}"


def test_service_account_is_namespaced_when_the_chart_lists_namespaces(
        release: Release, kubectl: Kubectl) -> None:
    apply_crds(kubectl)
    kubectl("create", "namespace", "team-x", check=False)  # the Role lives there
    release.helm("install", release.name, str(CHART), *inert_webhook_values(release.name),
                 "--set", "operator.namespaces={team-x}")
    missing = [c for c in NAMESPACED_ALLOWED if not can_i(kubectl, release, *c)]
    extra = [c for c in NAMESPACED_FORBIDDEN if can_i(kubectl, release, *c)]
    assert not missing, f"the operator's ServiceAccount lacks {missing}"
    assert not extra, f"the operator's ServiceAccount may {extra}"


def token_kubeconfig(kubectl: Kubectl, sandbox: Any, release: Release, path: Path) -> Path:
    """A kubeconfig that authenticates with a TokenRequest token of the chart's ServiceAccount."""
    token = kubectl("create", "token", release.fullname, "-n", release.namespace,
                    "--duration=1h").stdout.strip()
    ca = base64.b64encode(Path(sandbox.ca_file).read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "sandbox", "cluster": {"server": sandbox.server,
                                                     "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "sandbox", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_profiles(directory: Path) -> None:
    """Hand-made yolov8n profiles so the job is planned without tracing."""
    from yolofit.estimator.profile import Profile, ProfileKey, ProfileStore, Terms, resolve_model

    ref = resolve_model("yolov8n")
    store = ProfileStore(directory, shipped=None)
    for amp in ("off", "fp16", "bf16"):
        for ckpt in (False, True):
            per_sample = 150 * MiB // (2 if ckpt else 1)
            store.put(Profile(
                key=ProfileKey(ref.name, ref.config_hash, 640, amp, "SGD", 80, ckpt),
                params=3_000_000, allocated=Terms(GiB, per_sample, 1024),
                reserved=Terms(GiB + GiB // 10, per_sample + per_sample // 10, 1024),
                breakdown={"activations": Terms(0, per_sample)}, source="tests/ship"))


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60) -> Any:
    return testing.wait_for(fn, timeout, interval=0.5, what=what)


def admission_review(hook: dict[str, Any], port: int, ca: Path, namespace: str) -> Any:
    """POST an AdmissionReview for a small job the way the apiserver would for `hook`."""
    service = hook["clientConfig"]["service"]
    host = f"{service['name']}.{service['namespace']}.svc"
    job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "review", "namespace": namespace},
           "spec": {"model": "yolov8n", "data": "/data/coco8.yaml", "epochs": 1}}
    if hook["rules"][0]["resources"] == ["gpucapacitypolicies"]:
        job = {"apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
               "metadata": {"name": "review"}, "spec": {"namespaces": [{"namespace": "*"}]}}
    resource = {"group": "yolofit.io", "version": "v1alpha1", "resource": "yolotrainingjobs"}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": secrets.token_hex(8), "operation": "CREATE", "namespace": namespace,
        "name": "review", "object": job, "oldObject": None, "dryRun": False,
        "kind": {"group": "yolofit.io", "version": "v1alpha1", "kind": "YOLOTrainingJob"},
        "resource": resource, "requestKind": None, "requestResource": None,
        "userInfo": {"username": "tests/ship"}, "options": None}}
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.connect()  # verified against the IP SAN; now check the Service name too:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host):
        pass  # raises ssl.SSLCertVerificationError if the certificate does not name the Service
    conn.request("POST", service["path"], body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return json.loads(resp.read())


def test_operator_runs_with_only_the_charts_service_account(
        release: Release, kubectl: Kubectl, kube: Any, sandbox: Any, tmp_path: Path) -> None:
    from yolofit.operator.testing import OperatorProcess

    apply_crds(kubectl)
    release.helm("install", release.name, str(CHART), *inert_webhook_values(release.name))
    # The operator reads the chart's webhook certificate as the pod would (mounted Secret).
    certs = tmp_path / "tls"
    certs.mkdir()
    secret = kube.read_namespaced_secret(f"{release.fullname}-webhook-tls", release.namespace)
    for key, value in secret.data.items():
        (certs / key).write_bytes(base64.b64decode(value))
    profiles = tmp_path / "profiles"
    write_profiles(profiles)
    jobs_ns = release.namespace  # the release's webhooks do not select it (inert_webhook_values)
    deploy = json.loads(kubectl("get", "deployment", release.fullname, "-n", release.namespace,
                                "-o", "json").stdout)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({"YOLOFIT_OPERATOR_CERT_DIR": str(certs),
                "YOLOFIT_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
                "YOLOFIT_OPERATOR_PROFILE_DIR": str(profiles), "YOLOFIT_PROFILE_DIR": str(profiles),
                "YOLOFIT_OPERATOR_QUEUE_INTERVAL": "0.5"})
    # The chart's own args, minus the ports (a local process takes free ones).
    args = [a.replace("$(POD_NAMESPACE)", release.namespace) for a in container["args"]
            if not a.startswith(("--metrics-port", "--health-port", "--webhook-port",
                                 "--operator-namespace"))]
    op = OperatorProcess(token_kubeconfig(kubectl, sandbox, release, tmp_path / "sa.kubeconfig"),
                         tmp_path / "operator", env=env, install_webhooks=False,
                         operator_namespace=release.namespace, extra_args=args)
    job = f"ship-{secrets.token_hex(2)}"
    try:
        op.start(timeout=90)  # inside try: a start that times out leaves a process to stop
        kubectl("apply", "-n", jobs_ns, "-f", "-", input=json.dumps({
            "apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": job},
            "spec": {"model": "yolov8n", "data": "/data/coco8.yaml", "epochs": 1}}))
        plan = wait_for("the job's plan", lambda: json.loads(kubectl(
            "get", "ytj", job, "-n", jobs_ns, "-o", "json").stdout).get("status", {}).get("plan"))
        assert plan["gpuClass"] and plan["batchPerGpu"] >= 1
        wait_for("the worker pod", lambda: kubectl("get", "pod", f"{job}-worker-0", "-n", jobs_ns,
                                                  check=False).returncode == 0)
        kubectl("get", "service", job, "-n", jobs_ns)
        # kopf posts Events from a background queue: they follow the pods, not with them.
        wait_for("the operator's Events on the job", lambda: kubectl(
            "get", "events", "-n", jobs_ns, "--field-selector", f"involvedObject.name={job}",
            "-o", "name").stdout.strip())
        assert "yolofit_admissions_total" in op.metrics()
        # The apiserver's view of the webhooks: the chart's paths, over TLS with the chart's
        # certificate for the Service's DNS name, answered by this operator.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            config = json.loads(kubectl("get", kind, release.fullname, "-o", "json").stdout)
            for hook in config["webhooks"]:
                review = admission_review(hook, op.webhook_port, certs / "ca.crt", jobs_ns)
                assert review["response"]["allowed"] is True, review
                if kind.startswith("mutating"):  # the plan, on a CREATE
                    patch = json.loads(base64.b64decode(review["response"]["patch"]))
                    assert any(p["path"].startswith("/spec/plan") for p in patch), patch
        kubectl("delete", "ytj", job, "-n", jobs_ns, "--wait=true", "--timeout=60s")
    finally:
        log = op.log_path.read_text(errors="replace") if op.log_path.exists() else ""
        op.stop()
    denied = [line for line in log.splitlines()
              if re.search(r"\b403\b", line) or "orbidden" in line]  # not port 44403
    assert not denied, "RBAC denied the operator:\n" + "\n".join(denied[:20])
