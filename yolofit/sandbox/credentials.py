"""The sandbox's credentials on disk: its CA, the apiserver's serving certificate,
one client certificate and kubeconfig per component, and the service-account key."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import yaml

from yolofit.sandbox.pki import (
    CertKey,
    issue_cert,
    make_ca,
    new_key,
    private_key_pem,
    public_key_pem,
)

# The first address of the service range is the `kubernetes` Service's ClusterIP.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
APISERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    KUBERNETES_SERVICE_IP,
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

# name -> (CN, groups). The scheduler and controller-manager use their well-known
# identities, bound to their roles by the apiserver's bootstrap RBAC. kwok plays every
# kubelet, whose Node authorizer identity is per node, so it runs as an admin.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("yolofit-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok", ("system:masters",)),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the files `write_pki` creates under `root`."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def kubeconfig(self, name: str) -> Path:
        return self.root / f"{name}.kubeconfig"


def write_pki(root: Path, server: str) -> Pki:
    """Create the CA, the serving certificates, the clients' kubeconfigs and the
    service-account key under `root`; `server` is the apiserver URL they point at."""
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)
    ca = make_ca()
    ca.write(pki.ca_cert, pki.ca_key)
    issue_cert(ca, "kube-apiserver", hosts=APISERVER_HOSTS, server=True).write(
        pki.cert("apiserver"), pki.key("apiserver")
    )
    # Serving certificate for the scheduler's and controller-manager's /healthz.
    issue_cert(ca, "localhost", hosts=("127.0.0.1", "localhost"), server=True).write(
        pki.cert("components-serving"), pki.key("components-serving")
    )
    issue_cert(ca, "front-proxy-client", client=True).write(
        pki.cert("front-proxy-client"), pki.key("front-proxy-client")
    )
    for name, (cn, groups) in CLIENTS.items():
        client = issue_cert(ca, cn, organizations=groups, client=True)
        client.write(pki.cert(name), pki.key(name))
        write_kubeconfig(pki.kubeconfig(name), server, ca.cert_pem, client, user=name)
    sa = new_key()
    pki.sa_key.touch(mode=0o600)
    pki.sa_key.write_bytes(private_key_pem(sa))
    pki.sa_pub.write_bytes(public_key_pem(sa))
    return pki


def write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    client: CertKey,
    user: str,
    cluster: str = "yolofit-sandbox",
) -> None:
    """A self-contained kubeconfig (certificates embedded) with one context."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
