"""Prometheus metrics of one training rank (names fixed by docs/ARCHITECTURE.md).

Every rank serves its own /metrics (local rank r on metrics_port + r), labelled namespace, job,
rank and gpu_class; the operator's PodMonitor scrapes them. Base units: bytes and seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from yolofit.trainer.memory import MemoryPeaks

LABELS = ("namespace", "job", "rank", "gpu_class")
# Step times from a tiny CPU test (~0.05 s) to a large model at high resolution (~minutes).
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class TrainerMetrics:
    def __init__(self, namespace: str, job: str, rank: int, gpu_class: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"namespace": namespace, "job": job, "rank": str(rank), "gpu_class": gpu_class}
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r)

        # VRAM series get a sample only on CUDA (children made on first set): a CPU rank must
        # not show a 0-byte GPU peak.
        self._peak_allocated = gauge(
            "yolofit_trainer_peak_allocated_bytes",
            "Peak bytes allocated by the CUDA caching allocator.",
        )
        self._peak_reserved = gauge(
            "yolofit_trainer_peak_reserved_bytes",
            "Peak bytes reserved by the CUDA caching allocator.",
        )
        self._device_total = gauge(
            "yolofit_trainer_device_total_bytes",
            "Peak device memory used by the process (cudaMemGetInfo total "
            "- free, incl. context and workspaces).",
        )
        self.host_rss = gauge(
            "yolofit_trainer_host_peak_rss_bytes",
            "Peak resident set size of the rank's process (host memory, not VRAM).",
        ).labels(**labels)
        self.estimated = gauge(
            "yolofit_trainer_estimated_peak_bytes", "The plan's predicted peak bytes per rank."
        ).labels(**labels)
        self.images_per_second = gauge(
            "yolofit_trainer_images_per_second", "Training images per second of this rank."
        ).labels(**labels)
        self.epoch = gauge("yolofit_trainer_epoch", "Current epoch (1-based).").labels(**labels)
        self.steps = Counter(
            "yolofit_trainer_steps", "Forward/backward passes of this rank.", LABELS, registry=r
        ).labels(**labels)
        self.step_seconds = Histogram(
            "yolofit_trainer_step_seconds",
            "Wall time of one forward/backward pass (incl. data wait).",
            LABELS,
            buckets=STEP_BUCKETS,
            registry=r,
        ).labels(**labels)
        self._loss = Gauge(
            "yolofit_trainer_loss",
            "Last training loss per component (Ultralytics' loss items).",
            (*LABELS, "component"),
            registry=r,
        )
        self._labels = labels
        self._server: object | None = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self._server = start_http_server(port, addr=addr, registry=self.registry)

    def shutdown(self) -> None:
        server = self._server
        if isinstance(server, tuple):  # prometheus-client >= 0.17 returns (server, thread)
            server[0].shutdown()
            server[0].server_close()
        self._server = None

    def observe_step(self, seconds: float, images: int, losses: Mapping[str, float]) -> None:
        self.steps.inc()
        self.step_seconds.observe(seconds)
        if seconds > 0:
            self.images_per_second.set(images / seconds)
        for component, value in losses.items():
            self._loss.labels(**self._labels, component=component).set(value)

    def set_memory(self, peaks: MemoryPeaks) -> None:
        self.host_rss.set(peaks.host_peak_rss_bytes)
        if peaks.kind == "cuda":  # on CPU there is no VRAM to report
            self._peak_allocated.labels(**self._labels).set(peaks.peak_allocated_bytes)
            self._peak_reserved.labels(**self._labels).set(peaks.peak_reserved_bytes)
            self._device_total.labels(**self._labels).set(peaks.device_total_bytes)
