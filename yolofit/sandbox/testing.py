"""Helpers for tests that run against a sandbox (or any cluster): polling, simulated
pod exits through the kwok stages, and a handle on an externally started cluster."""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

T = TypeVar("T")

# Annotations read by the yolofit-pod-exit stage in deploy/kwok-stages.yaml.
SIM_EXIT_CODE = "yolofit.io/sim-exit-code"
SIM_TERMINATION_MESSAGE = "yolofit.io/sim-termination-message"
SIM_REASON = "yolofit.io/sim-reason"


def wait_for(
    fn: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Call `fn` until it returns something truthy and return that; AssertionError
    naming `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})"
            )
        time.sleep(interval)


def sim_exit_annotations(
    exit_code: int, message: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """Annotations that make kwok terminate a running pod's containers (see
    deploy/kwok-stages.yaml); put them in the pod at creation or patch them in."""
    ann = {SIM_EXIT_CODE: str(int(exit_code))}
    if message is not None:
        ann[SIM_TERMINATION_MESSAGE] = message
    if reason is not None:
        ann[SIM_REASON] = reason
    return ann


def finish_pod(
    core: CoreV1Api,
    namespace: str,
    name: str,
    exit_code: int,
    message: str | None = None,
    reason: str | None = None,
) -> None:
    """Drive a pod on a kwok node to Succeeded (0) or Failed (else) with `exit_code`,
    optionally with a termination message (what a trainer writes) and a reason."""
    body = {"metadata": {"annotations": sim_exit_annotations(exit_code, message, reason)}}
    core.patch_namespaced_pod(name, namespace, body)


def pod_phase(core: CoreV1Api, namespace: str, name: str) -> str:
    status = core.read_namespaced_pod(name, namespace).status
    return str(status.phase if status else None)


@dataclass(frozen=True)
class ExternalCluster:
    """A cluster started elsewhere (YOLOFIT_TEST_KUBECONFIG): the attributes of a
    Sandbox that tests use, read from its kubeconfig."""

    kubeconfig: Path
    server: str
    ca_file: Path | None

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> ExternalCluster:
        path = Path(path).expanduser()
        config: dict[str, Any] = yaml.safe_load(path.read_text())
        contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
        ctx = contexts.get(config.get("current-context", ""), {})
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
        cluster = clusters.get(ctx.get("cluster", ""), {})
        ca_file: Path | None = None
        if "certificate-authority" in cluster:
            ca_file = Path(cluster["certificate-authority"])
        elif "certificate-authority-data" in cluster:
            fd, name = tempfile.mkstemp(prefix="yolofit-ca-", suffix=".crt")
            with open(fd, "wb") as fh:
                fh.write(base64.b64decode(cluster["certificate-authority-data"]))
            ca_file = Path(name)
        return cls(kubeconfig=path, server=str(cluster.get("server", "")), ca_file=ca_file)

    def api_client(self) -> ApiClient:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def down(self) -> None:
        """Not ours to stop."""
