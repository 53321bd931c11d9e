"""A real Prometheus (Debian's `prometheus` package) as a subprocess on 127.0.0.1.

Never the packaged systemd service: each test run gets its own config, TSDB directory and
free port, and the process is stopped with the test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: apt-get install -y prometheus")
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def wait_for_targets(self, count: int, scrapes: int, timeout: float = 60) -> None:
        """Until `count` targets are up and each has been scraped `scrapes` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(f"count_over_time(up[5m]) and on() (count(up == 1) == {count})")
            if res.get("status") == "success":
                samples = [int(float(r["value"][1])) for r in res["data"]["result"]]
                if len(samples) == count and min(samples) >= scrapes:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus did not scrape {count} targets {scrapes} times: "
                           f"{self.get('/api/v1/targets')}")


@contextmanager
def running_prometheus(tmp: Path, jobs: dict[str, list[int]]) -> Iterator[Prometheus]:
    """Prometheus scraping 127.0.0.1:<port> per job every second, as the chart's monitors do:
    honor_labels keeps the exporters' job/namespace labels, the job name is the chart's."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            for job, ports in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
