"""A real Prometheus (Debian's `prometheus`) scrapes both ranks of a two-pod job.

The series carry the trainer's own labels (namespace, job, rank, gpu_class). Prometheus attaches
its target labels `job` and `namespace` too; `honor_labels: true` (honorLabels in the operator's
PodMonitor) keeps the trainer's values instead of renaming them to exported_*.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from yolofit.sandbox.localrun import wait_pods
from yolofit.sandbox.prometheus import running_prometheus

from .launch import Job, start_ranks

pytestmark = pytest.mark.slow  # real DDP training scraped by a real Prometheus


def test_prometheus_scrapes_peak_memory_of_both_ranks(dataset: Path, tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=2, epochs=2)
    ranks = start_ranks(job, tmp_path, config_patch={"linger_seconds": 6})
    targets = [f"127.0.0.1:{r.metrics_port}" for r in ranks]
    try:
        with running_prometheus({"yolofit-trainers": targets}, tmp_path / "prometheus") as prom:
            deadline = time.monotonic() + 240

            def left() -> float:
                return max(deadline - time.monotonic(), 1.0)

            expr = 'yolofit_trainer_host_peak_rss_bytes{job="tiny"}'
            try:
                found = prom.wait_for(expr, 2, timeout=left())
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{ranks[0].output()[-2000:]}")
            assert len(found) == 2, (found, ranks[0].output()[-2000:])
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
                assert prom.wait_for(f'{name}{{job="tiny",rank="1"}}', 1, timeout=left()), name
            estimate = prom.query('yolofit_trainer_estimated_peak_bytes{job="tiny",rank="0"}')
            assert float(estimate[0]["value"][1]) == 123_456_789
            assert wait_pods(ranks, timeout=300) == [0, 0]
    finally:
        wait_pods(ranks, timeout=1)
