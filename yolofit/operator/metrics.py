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
