"""Kueue in the sandbox, for real: its manager built from the Go module, its CRDs and
webhook configurations read from that module's own source, run off-cluster against the
sandbox's apiserver.

    kq = start_kueue(sb.dir, sb.pki, sb.server, progress)   # or Sandbox.up(with_kueue=True)
    kq.stop()                                                # webhooks removed first

Off-cluster means the webhooks cannot be reached through a Service, so the configurations
from `config/components/webhook/manifests.yaml` are rewritten to `url:
https://127.0.0.1:<port>/<path>`, and only the webhooks this configuration serves are kept
(Kueue's own kinds and the `pod` integration): a webhook for a framework the manager does
not run would answer 404 and, with `failurePolicy: Fail`, block that kind cluster-wide.

Certificates: with internal certificate management off, Kueue 0.19 reads its metrics
certificate from the fixed path /etc/kueue/metrics/certs, which a sandbox must not need. So
internal management stays on, and the Secret it manages is seeded with certificates made
here (sandbox/pki.py): a CA whose SAN holds `kueue-ca` (the rotator's validity test for its
CA) and a serving certificate for both the Service name the rotator checks and 127.0.0.1
(what the apiserver dials). The rotator finds them valid, keeps them, and injects the same
CA into the webhook configurations and the CRDs' conversion webhooks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from yolofit.sandbox import build, processes
from yolofit.sandbox.credentials import Pki, write_kubeconfig
from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.paths import cache_root, deploy_dir
from yolofit.sandbox.pki import issue_cert, load_cert_key, make_ca
from yolofit.sandbox.processes import Proc

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

KUEUE_VERSION = "v0.19.2"
TARGET = build.Target(
    "kueue", "kueue", "sigs.k8s.io/kueue/cmd/kueue",
    f"-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}",
)
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # only its DNS name matters: the rotator checks it
SECRET = "kueue-webhook-server-cert"
CA_NAME = "kueue-ca"
WEBHOOK_NAMES = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                 "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}
# CRDs whose conversion webhook Kueue's kustomization turns on (config/components/crd).
CONVERSION_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
FRAMEWORKS = ("pod",)
# The visibility API server needs an APIService and the apiserver's front proxy; the sandbox
# does not use it, so it stays off (everything else is Kueue's defaults).
FEATURE_GATES = "VisibilityOnDemand=false"
FIELD_MANAGER = "yolofit-sandbox"

Progress = Callable[[str], None]


def bin_dir() -> Path:
    """~/.cache/yolofit/kueue-<version>/bin, next to the control plane's k8s-<version>."""
    return cache_root() / f"kueue-{KUEUE_VERSION}" / "bin"


def ensure_built(progress: Progress | None = None) -> Path:
    """Build Kueue's manager from deploy/kueue once (minutes); the path of the binary."""
    return build.ensure_built(progress, (TARGET,), out=bin_dir())["kueue"]


def module_dir(deploy: Path | None = None) -> Path:
    """Kueue's source in the Go module cache, as deploy/kueue/go.mod pins it."""
    mod = (deploy or deploy_dir()) / "kueue"
    out = subprocess.run([build.find_go(), "list", "-m", "-json", "sigs.k8s.io/kueue"],
                         cwd=mod, capture_output=True, text=True, check=False,
                         env=dict(os.environ, GOFLAGS="-mod=mod"))
    try:
        path = Path(json.loads(out.stdout)["Dir"])
    except (ValueError, KeyError):
        raise SandboxError(f"cannot locate sigs.k8s.io/kueue {KUEUE_VERSION} in the Go module "
                           f"cache (`go list -m` in {mod}): {out.stderr.strip()[-500:]}") from None
    if not (path / "config" / "components" / "crd" / "bases").is_dir():
        raise SandboxError(f"{path} has no config/components/crd/bases: not Kueue's source?")
    return path


# ---- what gets installed (pure: module source + port + CA -> objects) ----

def crds(module: Path, webhook_url: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """The CRDs of Kueue's kustomization, with its conversion-webhook patches applied as
    URL webhooks."""
    crd_dir = module / "config" / "components" / "crd"
    listed = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())["resources"]
    out = []
    for rel in listed:
        doc = yaml.safe_load((crd_dir / rel).read_text())
        plural = doc["spec"]["names"]["plural"]
        if plural in CONVERSION_CRDS:
            doc["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": f"{webhook_url}/convert",
                                 "caBundle": base64.b64encode(ca_pem).decode()},
                "conversionReviewVersions": ["v1"]}}
        out.append(doc)
    return out


def _served(path: str) -> bool:
    """Webhook paths the manager registers in this configuration."""
    return "-kueue-x-k8s-io-" in path or ("pod" in FRAMEWORKS and path.endswith("--v1-pod"))


def webhook_configurations(module: Path, webhook_url: str, ca_pem: bytes,
                           excluded_namespaces: Iterable[str] = ("kube-system", NAMESPACE),
                           ) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, service references turned into URLs."""
    text = (module / "config" / "components" / "webhook" / "manifests.yaml").read_text()
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": list(excluded_namespaces)}]}
    out = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        hooks = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if not _served(path):
                continue
            hook["clientConfig"] = {"url": f"{webhook_url}{path}",
                                    "caBundle": base64.b64encode(ca_pem).decode()}
            if path.endswith("--v1-pod"):  # as Kueue's kustomization patches it
                hook["namespaceSelector"] = selector
            hooks.append(hook)
        doc["metadata"] = {"name": WEBHOOK_NAMES[doc["kind"]]}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


@dataclass(frozen=True)
class KueuePorts:
    webhook: int
    health: int
    metrics: int


def configuration(ports: KueuePorts, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for an off-cluster manager."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports.metrics}"},
        "webhook": {"port": ports.webhook, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE,
                                   "webhookSecretName": SECRET},
        "clientConnection": {"qps": 100, "burst": 200},
        "integrations": {"frameworks": list(FRAMEWORKS)},
        "manageJobsWithoutQueueName": False,
    }


def argv(binary: Path, config: Path, verbosity: int = 2) -> list[str]:
    return [str(binary), f"--config={config}", f"--feature-gates={FEATURE_GATES}",
            f"--zap-log-level={verbosity}"]


# ---- install and run ----

@dataclass
class Kueue:
    """A running Kueue manager and what it installed."""

    dir: Path
    ports: KueuePorts
    proc: Proc
    kubeconfig: Path
    timings: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        """Remove the webhook configurations (a stopped webhook with failurePolicy Fail
        would block every pod create), then stop the manager. CRDs and objects stay."""
        from kubernetes import config

        try:
            client = config.new_client_from_config(config_file=str(self.kubeconfig))
            try:
                for kind, name in WEBHOOK_NAMES.items():
                    _delete(client, f"/apis/admissionregistration.k8s.io/v1/"
                                    f"{kind.lower()}s/{name}")
            finally:
                client.close()
        finally:
            processes.stop(self.proc)


_PLURALS = {"CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1",
                                         "customresourcedefinitions"),
            "MutatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1",
                                             "mutatingwebhookconfigurations"),
            "ValidatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1",
                                               "validatingwebhookconfigurations"),
            "Namespace": ("/api/v1", "namespaces"), "Secret": ("/api/v1", "secrets"),
            "ResourceFlavor": ("/apis/kueue.x-k8s.io/v1beta2", "resourceflavors"),
            "ClusterQueue": ("/apis/kueue.x-k8s.io/v1beta2", "clusterqueues"),
            "LocalQueue": ("/apis/kueue.x-k8s.io/v1beta2", "localqueues"),
            "Cohort": ("/apis/kueue.x-k8s.io/v1beta2", "cohorts"),
            "WorkloadPriorityClass": ("/apis/kueue.x-k8s.io/v1beta2", "workloadpriorityclasses")}


def object_path(obj: dict[str, Any]) -> str:
    base, plural = _PLURALS[obj["kind"]]
    ns = obj["metadata"].get("namespace")
    return f"{base}/namespaces/{ns}/{plural}/{obj['metadata']['name']}" if ns else \
        f"{base}/{plural}/{obj['metadata']['name']}"


def request(client: ApiClient, method: str, path: str, body: Any = None,
            query: list[tuple[str, str]] | None = None,
            content_type: str = "application/json") -> dict[str, Any]:
    """One API call through the kubernetes client's transport (its TLS and credentials);
    ApiException on a non-2xx answer."""
    from kubernetes.client.exceptions import ApiException

    method, url, headers, data, _ = client.param_serialize(
        method, path, query_params=query or [],
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body, auth_settings=["BearerToken"])
    resp = client.call_api(method, url, header_params=headers, body=data)
    resp.read()
    if not 200 <= resp.status < 300:
        raise ApiException(http_resp=resp)
    result: dict[str, Any] = json.loads(resp.data) if resp.data else {}
    return result


def apply(client: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply (CRDs this large do not fit client-side apply's annotation)."""
    return request(client, "PATCH", object_path(obj), obj,
                   [("fieldManager", FIELD_MANAGER), ("force", "true")],
                   "application/apply-patch+yaml")


def _delete(client: ApiClient, path: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        request(client, "DELETE", path)
    except ApiException as exc:
        if exc.status != 404:
            raise


def apply_until_accepted(client: ApiClient, objs: Iterable[dict[str, Any]],
                         timeout: float = 60.0) -> None:
    """Apply objects whose admission goes through Kueue's webhooks, retrying while the
    webhook server or the CRDs are not answering yet."""
    from kubernetes.client.exceptions import ApiException

    for obj in objs:
        deadline = time.monotonic() + timeout
        while True:
            try:
                apply(client, obj)
                break
            except ApiException as exc:
                if exc.status not in (404, 500, 503) or time.monotonic() > deadline:
                    raise SandboxError(f"applying {obj['kind']} {obj['metadata']['name']}: "
                                       f"HTTP {exc.status}: {str(exc.body)[:500]}") from None
            time.sleep(0.5)


def _wait_established(client: ApiClient, names: list[str], timeout: float) -> None:
    from kubernetes.client import ApiextensionsV1Api

    api = ApiextensionsV1Api(client)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = api.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in ((crd.status and crd.status.conditions) or [])}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise SandboxError(f"CRD {name} not Established after {timeout:g}s")
            time.sleep(0.2)


def _seed_certs(root: Path) -> tuple[bytes, dict[str, bytes]]:
    """A CA the rotator accepts (RSA, SAN kueue-ca) and a serving certificate for 127.0.0.1
    and the Service."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root.mkdir(parents=True, exist_ok=True)
    # The rotator parses the CA key as PKCS#1 RSA when it injects the CA into webhooks.
    ca = make_ca(CA_NAME, hosts=(CA_NAME,),
                 key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    ca_key_pkcs1 = ca.key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
    serving = issue_cert(ca, f"{SERVICE}.{NAMESPACE}.svc", server=True,
                         hosts=(f"{SERVICE}.{NAMESPACE}.svc", "127.0.0.1", "localhost"))
    files = {"ca.crt": ca.cert_pem, "ca.key": ca_key_pkcs1,
             "tls.crt": serving.cert_pem, "tls.key": serving.key_pem}
    for name, data in files.items():
        path = root / name
        path.touch(mode=0o600, exist_ok=True)
        path.write_bytes(data)
    return ca.cert_pem, files


def start_kueue(sandbox_dir: Path, pki: Pki, server: str, progress: Progress | None = None,
                timeout: float = 120.0, preexec_fn: Callable[[], None] | None = None,
                deploy: Path | None = None) -> Kueue:
    """Build (once), install CRDs, webhooks and the seeded certificate Secret, start the
    manager and wait until its webhooks answer through the apiserver."""
    from kubernetes import config

    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    binary = ensure_built(say)
    timings = {"build_check_s": time.monotonic() - t0}
    module = module_dir(deploy)
    root = sandbox_dir / "kueue"
    root.mkdir(parents=True, exist_ok=True)
    ports = KueuePorts(processes.free_port(), processes.free_port(), processes.free_port())
    url = f"https://127.0.0.1:{ports.webhook}"
    ca_pem, files = _seed_certs(root / "certs")
    # Kueue runs as an admin (system:masters), as kwok does: no RBAC to install.
    sandbox_ca = load_cert_key(pki.ca_cert, pki.ca_key)
    client_cert = issue_cert(sandbox_ca, "kueue", organizations=("system:masters",), client=True)
    kubeconfig = root / "kubeconfig"
    write_kubeconfig(kubeconfig, server, sandbox_ca.cert_pem, client_cert, user="kueue")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(configuration(ports, root / "certs")))

    t1 = time.monotonic()
    client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        crd_docs = crds(module, url, ca_pem)
        for doc in crd_docs:
            apply(client, doc)
        _wait_established(client, [d["metadata"]["name"] for d in crd_docs], timeout)
        apply(client, {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": NAMESPACE}})
        apply(client, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": SECRET, "namespace": NAMESPACE},
                       "data": {k: base64.b64encode(v).decode() for k, v in files.items()}})
        for doc in webhook_configurations(module, url, ca_pem):
            apply(client, doc)
        timings["install_s"] = time.monotonic() - t1
        t2 = time.monotonic()
        log = sandbox_dir / "logs" / "kueue.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        say(f"starting kueue {KUEUE_VERSION} (log: {log})")
        proc = processes.start("kueue", argv(binary, cfg), log,
                               env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
                               preexec_fn=preexec_fn)
        kq = Kueue(dir=root, ports=ports, proc=proc, kubeconfig=kubeconfig, timings=timings)
        try:
            from yolofit.sandbox.components import http_check

            processes.wait_healthy(proc, lambda: http_check(ports.health, "/readyz"), timeout)
            # Ready means serving; a ResourceFlavor round trip proves the apiserver reaches
            # the webhooks (mutate + validate) and the CRDs are served.
            probe = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                     "metadata": {"name": "yolofit-sandbox-probe"}, "spec": {}}
            apply_until_accepted(client, [probe], timeout)
            _delete(client, object_path(probe))
        except BaseException:
            kq.stop()
            raise
        timings["start_s"] = time.monotonic() - t2
    finally:
        client.close()
    say(f"kueue ready in {time.monotonic() - t0:.1f}s (webhooks at {url})")
    return kq


# ---- queues for a policy (the demo's, by default) ----

def fleet_capacity(policy: Any, nodes: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Class name -> kueue_objects.Capacity summed over the nodes its selector matches: GPUs,
    CPU, memory, a MIG class's slices (mixed strategy: `nvidia.com/mig-<profile>`) and a
    HAMi class's gpumem (MiB: its GPUs x the nodes' nvidia.com/gpu.memory label)."""
    from yolofit.operator.kueue_objects import Capacity
    from yolofit.operator.sharing.hami import GPUMEM
    from yolofit.operator.sharing.mig import resource as mig_resource
    from yolofit.units import parse_bytes

    out = {}
    nodes = list(nodes)
    for c in policy.classes:
        gpus = cpu = mem = 0
        devices: dict[str, int] = {}
        slices = mig_resource(c.mig_profile) if c.mig_profile else None
        for n in nodes:
            labels = n["metadata"].get("labels") or {}
            if c.node_selector and all(labels.get(k) == v for k, v in c.node_selector.items()):
                alloc = n["status"]["allocatable"]
                node_gpus = int(alloc.get("nvidia.com/gpu", 0))
                gpus += node_gpus
                cpu += int(float(str(alloc.get("cpu", "0")).rstrip("m")))
                mem += parse_bytes(str(alloc.get("memory", "0")))
                if slices is not None and slices in alloc:
                    devices[slices] = devices.get(slices, 0) + int(alloc[slices])
                if c.backend.kind == "hami":
                    mib = node_gpus * int(labels.get("nvidia.com/gpu.memory", 0) or 0)
                    devices[GPUMEM] = devices.get(GPUMEM, 0) + mib
        out[c.name] = Capacity(gpus, cpu, mem, devices)
    return out


def policy_objects(policy_path: Path, nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Namespaces, ResourceFlavors, ClusterQueues and LocalQueues for a policy file."""
    from yolofit.operator import kueue_objects
    from yolofit.operator.api import GPUCapacityPolicySpec

    doc = yaml.safe_load(policy_path.read_text())
    policy = GPUCapacityPolicySpec.model_validate(doc.get("spec") or {})
    queues = kueue_objects.queues(policy, fleet_capacity(policy, nodes))
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": q["metadata"][
        "namespace"]}} for q in queues if q["kind"] == "LocalQueue"]
    return [*namespaces, *kueue_objects.flavors(policy), *queues]


def install_policy_queues(kq: Kueue, policy_path: Path, nodes: Iterable[dict[str, Any]],
                          timeout: float = 60.0) -> list[str]:
    """Apply `policy_objects`; their kinds and names."""
    from kubernetes import config

    objs = policy_objects(policy_path, nodes)
    client = config.new_client_from_config(config_file=str(kq.kubeconfig))
    try:
        apply_until_accepted(client, objs, timeout)
    finally:
        client.close()
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objs]
