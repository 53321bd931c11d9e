"""Unit tests: termination summary, Prometheus exposition, memory kind, offline guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from prometheus_client import generate_latest

from yolofit.trainer.exporter import TrainerMetrics
from yolofit.trainer.memory import MemoryPeaks, MemoryTracker
from yolofit.trainer.summary import Summary, write_termination_log

CONTRACT_FIELDS = {
    "rank",
    "memory_kind",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "device_total_bytes",
    "steps",
    "images_per_second",
    "exit_reason",
    "message",
    "attempt",
    "start_epoch",
    "epochs_done",
    "save_dir",
    "resumed_from",
    "objects_per_image",
    "objects_per_image_mean",
    "model_found",
    "ranks",
}


def test_summary_has_the_contract_fields_and_fits_a_termination_message(tmp_path: Path) -> None:
    s = Summary(rank=3, exit_reason="oom", message="x" * 10_000)
    log = tmp_path / "dev" / "termination-log"
    write_termination_log(s, log)
    data = json.loads(log.read_text())
    assert set(data) == CONTRACT_FIELDS
    assert s.exit_code == 88 and len(log.read_bytes()) < 4096
    assert Summary(rank=0, exit_reason="data-missing").exit_code == 2
    assert Summary(rank=0, exit_reason="model-differs").exit_code == 4


def test_cpu_memory_is_host_rss() -> None:
    peaks = MemoryTracker(torch.device("cpu")).peaks()
    assert peaks.kind == "host-rss"
    assert peaks.peak_allocated_bytes == peaks.host_peak_rss_bytes > 10 * 2**20


def test_metric_names_and_labels() -> None:
    m = TrainerMetrics("team-a", "job1", 1, "a100-80gb")
    m.estimated.set(10)
    m.observe_step(0.5, 8, {"box_loss": 1.5, "cls_loss": 2.0})
    m.set_memory(MemoryPeaks("cuda", 100, 200, 300, 400))
    text = generate_latest(m.registry).decode()
    labels = 'gpu_class="a100-80gb",job="job1",namespace="team-a",rank="1"'
    for line in (
        "yolofit_trainer_peak_allocated_bytes{%s} 100.0",
        "yolofit_trainer_peak_reserved_bytes{%s} 200.0",
        "yolofit_trainer_device_total_bytes{%s} 300.0",
        "yolofit_trainer_host_peak_rss_bytes{%s} 400.0",
        "yolofit_trainer_estimated_peak_bytes{%s} 10.0",
        "yolofit_trainer_images_per_second{%s} 16.0",
        "yolofit_trainer_steps_total{%s} 1.0",
        "yolofit_trainer_step_seconds_count{%s} 1.0",
        "yolofit_trainer_epoch{%s} 0.0",
    ):
        assert line % labels in text, line
    assert 'yolofit_trainer_loss{component="box_loss",' in text


def test_cpu_exports_no_vram_series() -> None:
    m = TrainerMetrics("ns", "j", 0, "cpu")
    m.set_memory(MemoryPeaks("host-rss", 5, 5, 5, 5))
    text = generate_latest(m.registry).decode()
    assert "yolofit_trainer_host_peak_rss_bytes{" in text
    assert "yolofit_trainer_peak_allocated_bytes{" not in text


def test_offline_guard_blocks_every_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import checks, downloads

    from yolofit.trainer.offline import DownloadBlocked, block_downloads

    monkeypatch.setattr(downloads, "safe_download", downloads.safe_download)
    monkeypatch.setattr(downloads, "is_url", downloads.is_url)
    monkeypatch.setattr(data_utils, "safe_download", data_utils.safe_download)
    monkeypatch.setattr(checks, "USER_CONFIG_DIR", tmp_path)
    block_downloads()
    with pytest.raises(DownloadBlocked, match="yolo26n.pt"):
        downloads.attempt_download_asset(tmp_path / "yolo26n.pt")
    with pytest.raises(ConnectionError):  # what check_amp() treats as "offline, skip"
        data_utils.safe_download("https://example.com/coco.zip", dir=tmp_path)
    assert downloads.is_url("https://example.com/x", check=True) is False
    checks.check_font("Arial-not-installed.ttf")  # Ultralytics' font fetch is a no-op now
    # check_amp() on an accelerator downloads yolo26n.pt; offline it skips and keeps AMP on.
    assert checks.check_amp(torch.nn.Linear(1, 1).to("meta")) is True
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("version", "ok"), [("8.4.0", True), ("8.4.190", True), ("8.3.250", False), ("8.5.0", False)]
)
def test_supported_ultralytics_range(version: str, ok: bool) -> None:
    from yolofit.trainer.compat import check_ultralytics_version
    from yolofit.trainer.errors import UnsupportedUltralytics

    if ok:
        check_ultralytics_version(version)
    else:
        with pytest.raises(UnsupportedUltralytics, match=r">=8\.4\.0,<8\.5"):
            check_ultralytics_version(version)


def test_sigterm_ends_with_143_and_a_terminated_summary() -> None:
    from yolofit.trainer.errors import Terminated, classify

    reason, message, expected = classify(Terminated("terminated by signal 15 (pod deleted?)"))
    s = Summary(rank=1, exit_reason=reason, message=message)
    assert (s.exit_reason, s.exit_code, expected) == ("terminated", 143, True)
