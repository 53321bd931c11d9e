"""A real Prometheus (Debian's `prometheus`) scrapes both ranks of a two-pod job.

The series carry the trainer's own labels (namespace, job, rank, gpu_class). Prometheus attaches
its target labels `job` and `namespace` too; `honor_labels: true` (honorLabels in the operator's
PodMonitor) keeps the trainer's values instead of renaming them to exported_*.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.launch import Job, free_port, log_of, start_ranks, wait_all

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, config file) of a Prometheus whose scrape targets the test writes."""
    if not Path(PROMETHEUS).is_file():
        pytest.fail("prometheus not installed: apt-get install -y prometheus (make system-deps)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    yield f"http://127.0.0.1:{port}", config


def _start(config: Path, url: str, tmp: Path) -> subprocess.Popen[bytes]:
    port = url.rsplit(":", 1)[1]
    return subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            "--log.level=warn",
        ],
        stdout=open(tmp / "prometheus.log", "wb"),
        stderr=subprocess.STDOUT,
    )  # noqa: SIM115


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for(url: str, promql: str, n: int, deadline: float) -> list[dict[str, Any]]:
    """Poll until the query returns n series (or the deadline passes); returns the last answer."""
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            found = _query(url, promql)
        except OSError:  # Prometheus still starting
            found = []
        if len(found) >= n:
            break
        time.sleep(0.5)
    return found


def test_prometheus_scrapes_peak_memory_of_both_ranks(
    dataset: Path, tmp_path: Path, prometheus: tuple[str, Path]
) -> None:
    url, config = prometheus
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, epochs=2)
    ranks = start_ranks(job, tmp_path, config_patch={"linger_seconds": 6})
    targets = [f"127.0.0.1:{r.metrics_port}" for r in ranks]
    config.write_text(
        json.dumps(
            {  # YAML is a superset of JSON
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": [
                    {
                        "job_name": "yolofit-trainers",
                        "honor_labels": True,
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    prom = _start(config, url, tmp_path)
    try:
        deadline = time.monotonic() + 240
        found = _wait_for(url, 'yolofit_trainer_host_peak_rss_bytes{job="tiny"}', 2, deadline)
        assert len(found) == 2, (found, log_of(tmp_path, 0)[-2000:])
        by_rank = {s["metric"]["rank"]: s for s in found}
        assert set(by_rank) == {"0", "1"}
        for s in found:
            labels = s["metric"]
            assert labels["namespace"] == "team-a" and labels["gpu_class"] == "cpu-test"
            assert float(s["value"][1]) > 50 * 2**20  # bytes, not KiB
        # The other series of the contract are there too.
        for name in (
            "yolofit_trainer_estimated_peak_bytes",
            "yolofit_trainer_steps_total",
            "yolofit_trainer_step_seconds_count",
            "yolofit_trainer_images_per_second",
            "yolofit_trainer_epoch",
            "yolofit_trainer_loss",
        ):
            assert _wait_for(url, f'{name}{{job="tiny",rank="1"}}', 1, deadline), name
        estimate = _query(url, 'yolofit_trainer_estimated_peak_bytes{job="tiny",rank="0"}')
        assert float(estimate[0]["value"][1]) == 123_456_789
        assert wait_all(ranks, timeout=300) == [0, 0]
    finally:
        wait_all(ranks, timeout=1)
        prom.terminate()
        prom.wait(timeout=30)
