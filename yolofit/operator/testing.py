"""Run `yolofit operator` as a subprocess against a cluster, as production does; for tests,
the demo and the benchmark. `kill()` is a real SIGKILL; `stop()` also removes the webhook
configurations so a dead webhook does not block later applies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from yolofit.estimator.profile import Profile, ProfileKey, ProfileStore, Terms

try:  # the estimator is moving model identity into its own module
    from yolofit.estimator.identity import resolve_model
except ImportError:  # pragma: no cover
    from yolofit.estimator.profile import resolve_model  # type: ignore[attr-defined,no-redef]

GiB = 2**30
MiB = 2**20


def write_synthetic_profiles(directory: Path, model: str = "yolov8n", fixed_gib: float = 1.0,
                  per_sample_mib: float = 200.0, imgsz: int = 640, nc: int = 80,
                  optimizer: str = "AdamW", ckpt_factor: float = 0.5,
                  per_object_bytes: int = 1024, per_mean_object_bytes: int = 0
                  ) -> ProfileStore:
    """Profiles for every AMP mode, with and without checkpointing, stored in `directory`
    (`per_object_bytes`: what each labelled object of the densest sample costs, per sample;
    `per_mean_object_bytes`: what each label of the typical sample costs, as segment masks
    do)."""
    ref = resolve_model(model)
    store = ProfileStore(directory, shipped=None)
    for amp in ("off", "fp16", "bf16"):
        for ckpt in (False, True):
            scale = (2.0 if amp == "off" else 1.0) * (ckpt_factor if ckpt else 1.0)
            per_sample = int(per_sample_mib * MiB * scale)
            fixed = int(fixed_gib * GiB)
            key = ProfileKey(ref.name, ref.config_hash, imgsz, amp, optimizer, nc, ckpt)
            alloc = Terms(fixed, per_sample, per_object_bytes, per_mean_object_bytes)
            reserved = Terms(int(fixed * 1.1), int(per_sample * 1.1), per_object_bytes,
                             per_mean_object_bytes)
            store.put(Profile(key=key, params=3_000_000, allocated=alloc, reserved=reserved,
                              breakdown={"weights": Terms(fixed // 4, 0),
                                         "activations": Terms(0, per_sample)},
                              source="test"))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(self, kubeconfig: Path | str, workdir: Path, env: dict[str, str] | None = None,
                 install_webhooks: bool = True, operator_namespace: str = "yolofit-system",
                 extra_args: list[str] | None = None) -> None:
        self.kubeconfig, self.workdir = str(kubeconfig), Path(workdir)
        self.env = dict(env or {})
        self.install_webhooks = install_webhooks
        self.operator_namespace = operator_namespace
        self.extra_args = list(extra_args or [])
        self.webhook_port, self.metrics_port, self.health_port = (free_port(), free_port(),
                                                                  free_port())
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [sys.executable, "-m", "yolofit.cli", "operator", "--kubeconfig", self.kubeconfig,
                "--operator-namespace", self.operator_namespace,
                "--webhook-port", str(self.webhook_port), "--metrics-port",
                str(self.metrics_port), "--health-port", str(self.health_port),
                *(["--install-webhooks"] if self.install_webhooks else []), *self.extra_args]
        env = {**os.environ, "YOLOFIT_OPERATOR_CERT_DIR": str(self.workdir / "certs"),
               **self.env}
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as r:
                    if r.status == 200 and self._webhooks_ready():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not ready after {timeout}s:\n{self.log_tail()}")

    def _webhooks_ready(self) -> bool:
        if not self.install_webhooks:
            return True
        text = self.log_path.read_text(errors="replace")
        return "registered the admission webhooks" in text

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crashed or OOM-killed operator."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, kubectl: Any | None = None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if kubectl is not None and self.install_webhooks:
            kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                    "yolofit.io", "--ignore-not-found", check=False)
            kubectl("delete", "validatingadmissionpolicy,validatingadmissionpolicybinding",
                    "yolofit.io-status", "--ignore-not-found", check=False)
