"""Run the training containers of simulated pods as local processes.

kwok only pretends to run containers. For the demo and the end-to-end tests, this module plays
the kubelet for chosen pods: it starts each pod's first container command with the pod's own
environment, replacing only what a real pod would get from the cluster — rank 0's DNS name
becomes 127.0.0.1, the rendezvous and metrics ports become free local ports (pods each have an
IP; local processes share one), and the termination log moves to a local file. When the
processes end, `report_to_pods()` hands each exit code and termination message back to the
cluster through the kwok stage annotations, so the operator reads them exactly as it would
read a real kubelet's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolofit.sandbox.testing import sim_exit_annotations

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

# Variables of this process's environment that must not leak into a local "pod".
_POD_ONLY_VARS = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK",
    "YOLOFIT_TRAIN_CONFIG", "YOLOFIT_TERMINATION_LOG", "KUBECONFIG",
    # fault injection: pass it as extra_env
    "YOLOFIT_INJECT_OOM_AT_STEP", "YOLOFIT_INJECT_OOM_RANK", "YOLOFIT_INJECT_KILL_AT_STEP",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_command(command: list[str]) -> list[str]:
    """A pod's `yolofit ...` command, resolved against this interpreter's environment."""
    if not command or command[0] != "yolofit":
        raise ValueError(f"not a yolofit container command: {command!r}")
    script = Path(sys.executable).with_name("yolofit")
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "yolofit.cli"]
    return [*exe, *command[1:]]


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    """Literal env of the pod's first container (valueFrom entries are not resolvable here)."""
    container = pod["spec"]["containers"][0]
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _metrics_port(pod: dict[str, Any]) -> int | None:
    for port in pod["spec"]["containers"][0].get("ports") or []:
        if port.get("name") == "metrics":
            return int(port["containerPort"])
    return None


@dataclass
class LocalPod:
    """One pod's container running as a local process."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    termination_log: Path
    metrics_port: int | None
    env: dict[str, str]

    def message(self) -> str:
        try:
            return self.termination_log.read_text()
        except OSError:
            return ""

    def summary(self) -> Any:
        return json.loads(self.message())

    def output(self) -> str:
        """Everything the container wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_pods(pods: list[dict[str, Any]], workdir: Path,
               extra_env: dict[str, str] | None = None,
               config_patch: dict[str, Any] | None = None) -> list[LocalPod]:
    """Start the first container of each pod (plain dicts, e.g. ApiClient.sanitize_for_serialization
    of V1Pod) as a local process, in pod order; the pods are one job's DDP group.
    `config_patch` adds keys to YOLOFIT_TRAIN_CONFIG (e.g. linger_seconds for a scrape)."""
    workdir.mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in _POD_ONLY_VARS}
    started = []
    for pod in pods:
        name = pod["metadata"]["name"]
        env = pod_env(pod)
        metrics = _metrics_port(pod)
        local_metrics = free_port() if metrics is not None else None
        env.update(MASTER_ADDR="127.0.0.1", PET_MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(master_port), PET_MASTER_PORT=str(master_port))
        if "YOLOFIT_TRAIN_CONFIG" in env:
            config = {**json.loads(env["YOLOFIT_TRAIN_CONFIG"]), **(config_patch or {})}
            if local_metrics is not None:
                config["metrics_port"] = local_metrics
            env["YOLOFIT_TRAIN_CONFIG"] = json.dumps(config)
        termination_log = workdir / f"{name}.termination-log"
        termination_log.unlink(missing_ok=True)
        env.update(YOLOFIT_TERMINATION_LOG=str(termination_log),
                   YOLO_CONFIG_DIR=str(workdir / "ultralytics"), **(extra_env or {}))
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(local_command(pod["spec"]["containers"][0]["command"]),
                                    env={**base, **env}, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=workdir, start_new_session=True)
        started.append(LocalPod(name, proc, log, termination_log, local_metrics, env))
    return started


def wait_pods(pods: list[LocalPod], timeout: float) -> list[int]:
    """Exit codes, in pod order; processes still running after `timeout` are killed (-9)."""
    deadline = time.monotonic() + timeout
    for p in pods:
        try:
            p.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
    return [int(p.proc.returncode) for p in pods]


def report_to_pods(core: CoreV1Api, namespace: str, pods: list[LocalPod]) -> None:
    """Terminate the simulated pods with the local exit codes and termination messages."""
    for p in pods:
        code = p.proc.returncode
        if code is None:
            raise RuntimeError(f"{p.name} is still running")
        reason = "Completed" if code == 0 else "Error"
        ann = sim_exit_annotations(code if code >= 0 else 128 - code, p.message(), reason)
        core.patch_namespaced_pod(p.name, namespace, {"metadata": {"annotations": ann}})


def log_tail(pod: LocalPod, lines: int = 30) -> str:
    return "\n".join(pod.output().splitlines()[-lines:])


def cleanup(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
