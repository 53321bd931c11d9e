"""The components' command lines carry the flags the sandbox relies on, and the
credentials they point at exist."""

from __future__ import annotations

from pathlib import Path

import yaml

from yolofit.sandbox import components
from yolofit.sandbox.components import Ports
from yolofit.sandbox.credentials import write_pki

PORTS = Ports(etcd_client=1, etcd_peer=2, apiserver=3, controller_manager=4, scheduler=5, kwok=6)


def test_apiserver_flags(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, "https://127.0.0.1:3")
    argv = components.apiserver_argv(Path("/bin/kube-apiserver"), pki, PORTS)
    flags = dict(a.split("=", 1) for a in argv[1:])
    assert flags["--advertise-address"] == "127.0.0.1"
    assert flags["--authorization-mode"] == "Node,RBAC"
    assert {"MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"} <= set(
        flags["--enable-admission-plugins"].split(",")
    )
    assert flags["--etcd-servers"] == "http://127.0.0.1:1"
    assert flags["--secure-port"] == "3"
    for key in (
        "--tls-cert-file",
        "--client-ca-file",
        "--service-account-signing-key-file",
        "--proxy-client-cert-file",
    ):
        assert Path(flags[key]).is_file(), key


def test_gang_scheduling_is_on_in_every_component(tmp_path: Path) -> None:
    """PodGroup (scheduling.k8s.io/v1beta1) and the scheduler's gang plugin need the
    GenericWorkload gate on the apiserver, scheduler and controller-manager, and the beta
    group version served."""
    pki = write_pki(tmp_path, "https://127.0.0.1:3")
    for build in (components.apiserver_argv, components.scheduler_argv,
                  components.controller_manager_argv):
        flags = dict(a.split("=", 1) for a in build(Path("/bin/x"), pki, PORTS)[1:])
        assert "GenericWorkload=true" in flags["--feature-gates"].split(","), build.__name__
    api = dict(a.split("=", 1) for a in components.apiserver_argv(Path("/x"), pki, PORTS)[1:])
    assert api["--runtime-config"] == "scheduling.k8s.io/v1beta1=true"


def test_kubeconfigs_embed_credentials_and_point_at_the_server(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, "https://127.0.0.1:3")
    config = yaml.safe_load(pki.kubeconfig("kube-scheduler").read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:3"
    assert config["users"][0]["user"]["client-certificate-data"]
    assert pki.kubeconfig("admin").stat().st_mode & 0o777 == 0o600


def test_kwok_manages_only_annotated_nodes(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, "https://127.0.0.1:3")
    argv = components.kwok_argv(Path("/bin/kwok"), pki, PORTS, Path("/stages.yaml"))
    assert "--manage-all-nodes=false" in argv
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    assert "--config=/stages.yaml" in argv
