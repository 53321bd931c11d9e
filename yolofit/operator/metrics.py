"""Operator metrics (prometheus-client); names exactly as docs/ARCHITECTURE.md lists them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

ADMISSIONS = Counter("yolofit_admissions_total", "Admission decisions by result "
                     "(admitted, profiling, rejected, queued) and GPU class.",
                     ["result", "gpu_class", "namespace"], registry=REGISTRY)
PLAN_SECONDS = Histogram("yolofit_plan_duration_seconds", "Time to plan one job (profile "
                         "lookup and planner).", registry=REGISTRY,
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                  0.5, 1.0))
JOBS = Gauge("yolofit_jobs", "Jobs by phase.", ["phase", "namespace"], registry=REGISTRY)
ADMITTED_GPUS = Gauge("yolofit_admitted_gpus", "GPUs of admitted, unfinished jobs.",
                      ["gpu_class", "namespace"], registry=REGISTRY)
PREDICTED_UTILISATION = Histogram("yolofit_predicted_utilisation_ratio", "Predicted peak / "
                                  "usable memory of admitted plans.", ["gpu_class"],
                                  registry=REGISTRY,
                                  buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9,
                                           0.95, 1.0))
ESTIMATE_ERROR = Histogram("yolofit_estimate_error_ratio", "(measured - estimate) / estimate "
                           "of the peak device memory, per finished rank set.", ["gpu_class"],
                           registry=REGISTRY,
                           buckets=(-0.5, -0.25, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1,
                                    0.25, 0.5))
OOMS = Counter("yolofit_oom_total", "Jobs that ran out of GPU memory after admission.",
               ["gpu_class", "namespace"], registry=REGISTRY)
REPLANS = Counter("yolofit_replans_total", "Re-plans of admitted jobs by cause: OutOfMemory "
                  "(CUDA OOM; spends the policy's maxReplans), DataDenser and ModelDiffers "
                  "(the pod measured what admission assumed, before any GPU memory was "
                  "spent). gpu_class is the class of the plan re-planned.",
                  ["gpu_class", "namespace", "cause"], registry=REGISTRY)
WEBHOOK_REQUESTS = Counter("yolofit_webhook_requests_total", "Admission webhook requests by "
                           "webhook (mutate, validate) and result (allowed, denied, error).",
                           ["webhook", "result"], registry=REGISTRY)
JOB_MEMORY = Gauge("yolofit_job_memory_bytes", "Per GPU of an admitted, unfinished job: "
                   "memory requested of its backend (kind=requested: card, MIG slice, DRA "
                   "claim minimum, HAMi gpumem, KAI gpu-memory) and predicted by the plan "
                   "(kind=predicted).", ["namespace", "job", "gpu_class", "backend", "kind"],
                   registry=REGISTRY)
TRACES = Counter("yolofit_traces_total", "Profile traces (models without a shipped profile) "
                 "by result: ok (profile stored), failed (its jobs end ProfilingFailed; the "
                 "key is traced again after 10 minutes), dropped (every job that asked for it "
                 "was deleted before its turn).", ["result"], registry=REGISTRY)
TRACE_SECONDS = Histogram("yolofit_trace_duration_seconds", "Wall time of one profile trace "
                          "in its worker process, ok or failed.", registry=REGISTRY,
                          buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600))
TRACE_PEAK_RSS = Histogram("yolofit_trace_peak_rss_bytes", "Peak resident memory of a trace "
                           "worker, ok or failed (the budget is profiling.memoryBudgetMiB).",
                           registry=REGISTRY,
                           buckets=tuple(m * 2**20 for m in (256, 512, 1024, 1536, 2048, 3072,
                                                             4096, 6144, 8192, 12288, 16384)))
TRACE_QUEUE = Gauge("yolofit_trace_queue_keys", "Profile keys waiting for a trace worker, by "
                    "the namespace whose line holds them (served round robin).", ["namespace"],
                    registry=REGISTRY)
