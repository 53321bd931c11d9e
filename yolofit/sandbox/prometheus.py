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
import urllib.error
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


class PrometheusError(RuntimeError):
    """The server answered a request with an error (e.g. a PromQL syntax or type error)."""


class Prometheus:
    """Handle on a running server: `query()`, `wait_for()`, `wait_for_targets()`."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; the decoded body. An error answer raises PrometheusError with the
        server's own errorType and error (400/422 carry them as JSON too)."""
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
                body: dict[str, Any] = json.load(r)
        except urllib.error.HTTPError as exc:
            try:
                body = json.load(exc)
            except ValueError:
                raise PrometheusError(f"prometheus {path} {params}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"prometheus {path} {params}: "
                                  f"{body.get('errorType')}: {body.get('error')}")
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

    def wait_for_targets(self, count: int, scrapes: int = 1, timeout: float = 60.0) -> None:
        """Poll until exactly `count` targets are up and each has been scraped at least
        `scrapes` times (enough samples for rate() and friends)."""
        expr = f"count_over_time(up[5m]) and on() (count(up == 1) == {count})"
        deadline = time.monotonic() + timeout
        while True:
            samples = [int(float(r["value"][1])) for r in self.query(expr)]
            if len(samples) == count and min(samples) >= scrapes:
                return
            if time.monotonic() > deadline:
                targets = self.get("/api/v1/targets")["data"]
                raise TimeoutError(f"prometheus did not scrape {count} targets {scrapes} times "
                                   f"in {timeout:g}s: {targets}")
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
