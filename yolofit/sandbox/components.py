"""Command lines and health checks of the five control-plane components.

Pure functions of (binaries, ports, paths) -> argv, so the flags are readable in one
place and testable without starting anything.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path

from yolofit.sandbox.credentials import SERVICE_CLUSTER_IP_RANGE, Pki
from yolofit.sandbox.fleet import KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE

NODE_LEASE_SECONDS = 600

# Gang scheduling in kube-scheduler (KEP-4671): the GenericWorkload gate (beta in v1.37,
# off by default) turns on the PodGroup API, the pods' spec.schedulingGroup and the
# scheduler's GangScheduling plugin; the scheduling.k8s.io/v1beta1 group version (where
# PodGroup is served) is a beta API and therefore off by default too. Every component
# that knows the gate gets it, so they agree on which fields exist.
FEATURE_GATES = "GenericWorkload=true"
RUNTIME_CONFIG = "scheduling.k8s.io/v1beta1=true"
NODE_MONITOR_GRACE_SECONDS = 900

# Start order; `down` stops them in reverse.
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
         "kueue")  # kueue: only with --with-kueue (sandbox/kueue.py)


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def etcd_argv(binary: Path, data: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=sandbox",
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=sandbox={peer}",
        # A throwaway test store: skipping fsync makes every write ~10x cheaper on slow disks.
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def apiserver_argv(binary: Path, pki: Pki, ports: Ports) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        # Explicit, because the apiserver otherwise looks for the default route's
        # address and some boxes have none.
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=Node,RBAC",
        # The webhook plugins are on by default; naming them keeps them on if defaults move.
        "--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,"
        "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
        "--allow-privileged=true",
        # Front-proxy (aggregated APIs such as metrics-server) trusts the same CA; it
        # also keeps the components from logging a missing requestheader CA forever.
        f"--requestheader-client-ca-file={pki.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        # No kubelet or kube-proxy will ever serve the `kubernetes` Service's endpoint,
        # and 127.0.0.1 is not a valid endpoint address.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={pki.root / 'apiserver-certs'}",
        f"--feature-gates={FEATURE_GATES}",
        f"--runtime-config={RUNTIME_CONFIG}",
        "--profiling=false",
        "--v=1",
    ]


def _component_serving(pki: Pki, name: str, port: int) -> list[str]:
    kubeconfig = pki.kubeconfig(name)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.cert('components-serving')}",
        f"--tls-private-key-file={pki.key('components-serving')}",
        f"--client-ca-file={pki.ca_cert}",
        # One instance each: skip the leader-election wait at start.
        "--leader-elect=false",
        f"--feature-gates={FEATURE_GATES}",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(binary: Path, pki: Pki, ports: Ports) -> list[str]:
    return [
        str(binary),
        *_component_serving(pki, "kube-controller-manager", ports.controller_manager),
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        # Fake nodes get no pod CIDRs (kwok hands out pod IPs itself).
        "--controllers=*,-node-ipam-controller",
        # Simulated nodes never fail, and renewing 1,000 nodes' leases every 10 s would
        # keep a 2-core box busy: kwok renews every 150 s (lease 600 s), so the node
        # lifecycle controller must wait longer than that before calling a node lost.
        f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
        "--kube-api-qps=100",
        "--kube-api-burst=200",
    ]


def scheduler_argv(binary: Path, pki: Pki, ports: Ports) -> list[str]:
    return [
        str(binary),
        *_component_serving(pki, "kube-scheduler", ports.scheduler),
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def kwok_argv(binary: Path, pki: Pki, ports: Ports, stages: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={pki.kubeconfig('kwok')}",
        f"--config={stages}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector="
        f"{KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.240.0.1",
        f"--server-address=127.0.0.1:{ports.kwok}",
    ]


# ---- health checks: None when healthy, else a short reason ----


def _tls_context(pki: Pki, client: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client:
        ctx.load_cert_chain(str(pki.cert(client)), str(pki.key(client)))
    return ctx


def _get(conn: http.client.HTTPConnection, path: str) -> str | None:
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read(16000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {path}: {exc.__class__.__name__}: {exc}"
    finally:
        conn.close()
    if resp.status != 200:
        failing = [ln[3:].split()[0] for ln in body.splitlines() if ln.startswith("[-]")]
        more = f" (+{len(failing) - 3} more)" if len(failing) > 3 else ""
        detail = f", failing: {', '.join(failing[:3])}{more}" if failing else ""
        return f"GET {path}: HTTP {resp.status}{detail}"
    return None


def https_check(pki: Pki, port: int, path: str, client: str | None = "admin") -> str | None:
    ctx = _tls_context(pki, client)
    return _get(http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=3), path)


def http_check(port: int, path: str) -> str | None:
    return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=3), path)
