"""A real Prometheus server (Debian's `prometheus` package) started as a local process.

Used by the demo and the monitoring tests: it scrapes the real exporters over loopback and is
queried through its HTTP API. Never the system service: its own config, port and temp TSDB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.localrun import free_port


def prometheus_binary(name: str = "prometheus") -> str:
    path = shutil.which(name)
    if not path:
        raise SandboxError(f"{name} not found: install Debian's prometheus package "
                           "(make setup does: apt-get install prometheus)")
    return path


class Prometheus:
    """Handle on a running server: `query()`, `series()`, `wait_for()`."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def get(self, path: str, **params: str) -> dict[str, Any]:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
            body: dict[str, Any] = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a PromQL error raises)."""
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["data"]["result"]
        return result

    def wait_for(self, expr: str, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll `expr` until it returns at least `count` series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if len(result) >= count:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} returned {len(result)} series after {timeout:g}s, "
                                   f"wanted {count}")
            time.sleep(0.5)


def scrape_config(jobs: dict[str, list[str]], interval: str = "1s") -> dict[str, Any]:
    """Config scraping each job's host:port targets; exporters' own job/namespace labels win
    (honor_labels), as the chart's PodMonitor does."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": name, "honor_labels": True, "static_configs": [{"targets": targets}]}
            for name, targets in jobs.items()
        ],
    }


@contextmanager
def running_prometheus(jobs: dict[str, list[str]], workdir: Path | None = None,
                       rule_files: list[Path] | None = None,
                       timeout: float = 30.0) -> Iterator[Prometheus]:
    """Start Prometheus scraping `jobs` ({job_name: ["127.0.0.1:port", ...]}); stop it after."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="yolofit-prom-"))
    tmp.mkdir(parents=True, exist_ok=True)
    config = scrape_config(jobs)
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise SandboxError(f"prometheus exited {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SandboxError(f"prometheus not ready after {timeout:g}s (log {log})")
            time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
