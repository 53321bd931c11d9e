"""Local control plane for yolofit's demo and integration tests: a real
kube-apiserver, etcd, scheduler and controller-manager built from source, with kwok
simulating a fleet of GPU nodes. See `Sandbox` and `yolofit sandbox --help`."""

from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.fleet import Fleet, NodeGroup, create_nodes, fleet_nodes, load_fleet
from yolofit.sandbox.sandbox import Sandbox

__all__ = [
    "Fleet",
    "NodeGroup",
    "Sandbox",
    "SandboxError",
    "create_nodes",
    "fleet_nodes",
    "load_fleet",
]
