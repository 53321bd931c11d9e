"""Generate the yolofit Grafana dashboard (charts/yolofit/dashboards/yolofit.json).

    python charts/yolofit/dashboards/gen.py          # rewrite yolofit.json
    python charts/yolofit/dashboards/gen.py --check  # exit 1 if yolofit.json is stale

The dashboard is code so that its queries can be tested: tests/ship evaluates every
expression against a real Prometheus that scraped the operator's and the trainer's real
exporters, and checks that every metric name is one the project exports
(docs/ARCHITECTURE.md, "Metric names"). `up{job="yolofit-operator"}` is Prometheus' own
scrape health; the chart's PodMonitor/ServiceMonitor set that job name.

Template variables: `datasource`, `namespace` and `gpu_class` (multi-value, "All" = `.*`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))  # charts/yolofit: generated.py
from generated import write_or_check  # noqa: E402

OUTPUT = Path(__file__).with_name("yolofit.json")
UID = "yolofit-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Selectors shared by the panels; the variables are regexes ("All" = ".*").
JOB_SEL = 'namespace=~"$namespace", gpu_class=~"$gpu_class"'
NS_SEL = 'namespace=~"$namespace"'
CLASS_SEL = 'gpu_class=~"$gpu_class"'
OPERATOR_UP = 'up{job="yolofit-operator"}'
RATE = "$__rate_interval"
SPARSE = "1h"  # window for per-job events (admissions, job ends): a few per hour at most
PER_JOB = "namespace, job, gpu_class"
JOB_LEGEND = "{{namespace}}/{{job}}"


def sel(metric: str, selector: str = JOB_SEL) -> str:
    return f"{metric}{{{selector}}}" if selector else metric


MEASURED_OVER_ESTIMATE = (f"{sel('yolofit_trainer_device_total_bytes')}"
                          f" / {sel('yolofit_trainer_estimated_peak_bytes')}")
REQUESTED = f'kind="requested", {JOB_SEL}'
PREDICTED = f'kind="predicted", {JOB_SEL}'
QUEUED = sel("yolofit_jobs", f'phase="Queued", {NS_SEL}')


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}


def panel(kind: str, title: str, description: str, unit: str,
          queries: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    """One panel; `queries` are (PromQL, legend) pairs. gridPos/id are set by layout()."""
    out: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(queries)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    if kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "table", "placement": "right",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    out.update(extra)
    return out


def quantiles(metric: str, by: str, selector: str, window: str,
              qs: tuple[float, ...] = (0.5, 0.9)) -> list[tuple[str, str]]:
    groups = f"{by}, le" if by else "le"
    legend = "".join("{{" + label.strip() + "}} " for label in by.split(",") if label.strip())
    return [(f"histogram_quantile({q}, sum by ({groups}) "
             f"(rate({sel(metric + '_bucket', selector)}[{window}])))", f"{legend}p{int(q * 100)}")
            for q in qs]


def rows() -> list[tuple[str, list[dict[str, Any]]]]:
    """(row title, panels) in display order."""
    fit = [
        panel("timeseries", "VRAM per job: measured peak vs estimate",
              "Per job and GPU class, the largest rank: peak reserved and device-total bytes "
              "measured by the trainer, next to the plan's estimate.", "bytes", [
                  (f"max by ({PER_JOB}) ({sel('yolofit_trainer_peak_reserved_bytes')})",
                   "{{namespace}}/{{job}} ({{gpu_class}}) reserved"),
                  (f"max by ({PER_JOB}) ({sel('yolofit_trainer_device_total_bytes')})",
                   "{{namespace}}/{{job}} ({{gpu_class}}) device total"),
                  (f"max by ({PER_JOB}) ({sel('yolofit_trainer_estimated_peak_bytes')})",
                   "{{namespace}}/{{job}} ({{gpu_class}}) estimate"),
              ]),
        panel("timeseries", "Measured / estimate per job",
              "Device-total peak of the largest rank divided by the plan's estimate. Above 1 the "
              "estimate was too low (OOM risk); far below 1 the GPU is under-used.",
              "percentunit", [
                  (f"max by ({PER_JOB}) ({MEASURED_OVER_ESTIMATE})",
                   "{{namespace}}/{{job}} ({{gpu_class}})"),
              ]),
        panel("timeseries", "Host peak RSS per job (CPU runs, not VRAM)",
              "Peak resident memory of CPU-only ranks. It is host memory, not GPU memory.",
              "bytes", [
                  (f"max by (namespace, job) ({sel('yolofit_trainer_host_peak_rss_bytes')})",
                   "{{namespace}}/{{job}}"),
              ]),
    ]
    utilisation = [
        panel("timeseries", "Predicted utilisation of usable VRAM per class",
              "Planned device bytes / usable bytes of the chosen class, over admissions in "
              "the past hour.", "percentunit",
              quantiles("yolofit_predicted_utilisation_ratio", "gpu_class", CLASS_SEL, SPARSE)),
        panel("timeseries", "Measured peak / estimate per class",
              "Worst rank of any running job per class: measured device total / estimate.",
              "percentunit", [
                  (f"max by (gpu_class) ({MEASURED_OVER_ESTIMATE})", "{{gpu_class}}"),
              ]),
        panel("timeseries", "Estimate error per class ((measured - estimate) / estimate)",
              "From the termination summaries of jobs that finished in the past hour. "
              "Positive = under-estimate.", "percentunit",
              quantiles("yolofit_estimate_error_ratio", "gpu_class", CLASS_SEL, SPARSE,
                        (0.1, 0.5, 0.9))),
    ]
    per_backend = [
        panel("timeseries", "Memory per GPU by backend: requested vs predicted vs measured",
              "Summed over admitted jobs, per backend (device-plugin, mig, dra, hami, kai): what "
              "the pods asked their backend for, what the plans predicted, and the trainers' "
              "measured device-total peak. Requested far above predicted is memory no job "
              "will use.", "bytes", [
                  (f"sum by (backend) ({sel('yolofit_job_memory_bytes', REQUESTED)})",
                   "{{backend}} requested"),
                  (f"sum by (backend) ({sel('yolofit_job_memory_bytes', PREDICTED)})",
                   "{{backend}} predicted"),
                  (f"sum by (backend) (max by (namespace, job) "
                   f"({sel('yolofit_trainer_device_total_bytes')}) * on (namespace, job) "
                   f"group_left (backend) (0 * max by (namespace, job, backend) "
                   f"({sel('yolofit_job_memory_bytes', REQUESTED)}) + 1))",
                   "{{backend}} measured"),
              ]),
    ]
    admission = [
        panel("timeseries", "Admissions by result", "Admission decisions per second.", "ops", [
            (f"sum by (result) (rate({sel('yolofit_admissions_total')}[{RATE}]))",
             "{{result}}"),
        ]),
        panel("timeseries", "Jobs by phase", "YOLOTrainingJobs the operator knows, per phase.",
              "short", [(f"sum by (phase) (yolofit_jobs{{{NS_SEL}}})", "{{phase}}")]),
        panel("stat", "Queued jobs", "Jobs waiting for GPU quota.", "short",
              [(f"sum({QUEUED})", "queued")]),
        panel("timeseries", "GPUs admitted by class and namespace",
              "GPUs held by admitted jobs.", "short", [
                  (f"sum by (gpu_class, namespace) ({sel('yolofit_admitted_gpus')})",
                   "{{gpu_class}} {{namespace}}"),
              ]),
    ]
    oom = [
        panel("timeseries", "OOMs after admission", "CUDA out-of-memory exits of admitted jobs.",
              "short", [
                  (f"sum by (gpu_class, namespace) (increase({sel('yolofit_oom_total')}[{RATE}]))",
                   "{{gpu_class}} {{namespace}}"),
              ]),
        panel("timeseries", "Re-plans",
              "Jobs re-planned with a smaller batch per GPU after an OOM.",
              "short", [
                  (f"sum by (gpu_class, namespace) "
                   f"(increase({sel('yolofit_replans_total')}[{RATE}]))",
                   "{{gpu_class}} {{namespace}}"),
              ]),
        panel("stat", "OOMs in the time range", "Total OOMs in the selected range.", "short",
              [(f"sum(increase({sel('yolofit_oom_total')}[$__range]))", "OOMs")]),
    ]
    throughput = [
        panel("timeseries", "Step time per job", "Training step time, p50 and p95 over ranks.", "s",
              quantiles("yolofit_trainer_step_seconds", "namespace, job", JOB_SEL, RATE,
                        (0.5, 0.95))),
        panel("timeseries", "Images/s per job", "Training throughput, summed over ranks.",
              "short", [
            (f"sum by (namespace, job) ({sel('yolofit_trainer_images_per_second')})", JOB_LEGEND),
        ]),
        panel("timeseries", "Loss components", "Rank-averaged training loss per component.",
              "short", [
                  (f"avg by (namespace, job, component) ({sel('yolofit_trainer_loss')})",
                   "{{namespace}}/{{job}} {{component}}"),
              ]),
        panel("timeseries", "Epoch", "Current epoch per job.", "short", [
            (f"max by (namespace, job) ({sel('yolofit_trainer_epoch')})", JOB_LEGEND),
        ]),
    ]
    operator = [
        panel("stat", "Operator replicas up", "Scrape health of the operator pods.", "short",
              [(f"sum({OPERATOR_UP})", "up")]),
        panel("timeseries", "Plan latency", "Time to plan one job (webhook path, no tracing).", "s",
              quantiles("yolofit_plan_duration_seconds", "", "", RATE, (0.5, 0.99))),
        panel("timeseries", "Webhook requests by result", "Admission webhook calls per second.",
              "ops", [
                  (f"sum by (webhook, result) (rate(yolofit_webhook_requests_total[{RATE}]))",
                   "{{webhook}} {{result}}"),
              ]),
    ]
    profiling = [
        panel("timeseries", "Profile traces by result",
              "Traces of models without a shipped profile in the past hour: ok (profile "
              "stored), failed (the jobs end ProfilingFailed), dropped (every asking job was "
              "deleted first).", "short", [
                  (f"sum by (result) (increase(yolofit_traces_total[{SPARSE}]))", "{{result}}"),
              ]),
        panel("timeseries", "Trace duration", "Wall time of one trace in its worker, over the "
              "past hour's traces (a job waits this long, plus its queue, for a first "
              "estimate).", "s",
              quantiles("yolofit_trace_duration_seconds", "", "", SPARSE)),
        panel("timeseries", "Trace worker peak memory",
              "Peak resident memory of the trace workers over the past hour's traces; the "
              "chart's profiling.memoryBudgetMiB stops a worker above it.", "bytes",
              quantiles("yolofit_trace_peak_rss_bytes", "", "", SPARSE, (0.5, 0.99))),
        panel("timeseries", "Keys waiting for a trace, by namespace",
              "Profile keys queued for the trace worker per asking namespace; namespaces are "
              "served round robin, so one namespace's burst does not hold the others.",
              "short", [
                  (f"sum by (namespace) ({sel('yolofit_trace_queue_keys', NS_SEL)})",
                   "{{namespace}}"),
              ]),
    ]
    return [
        ("Fit: VRAM estimate vs measured", fit),
        ("Memory utilisation per class", utilisation),
        ("Right-sized GPUs: memory per backend", per_backend),
        ("Admission and queue", admission),
        ("OOMs and re-plans", oom),
        ("Training: step time and images/s", throughput),
        ("Profiling: first estimates of models without a profile", profiling),
        ("Operator health", operator),
    ]


def layout(sections: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows of 24 columns; stat panels are narrow, time series share a row evenly."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, members in sections:
        panels.append({"type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        widths = [4 if p["type"] == "stat" else 0 for p in members]
        wide = [i for i, w in enumerate(widths) if w == 0]
        rest = 24 - sum(widths)
        for i in wide:
            widths[i] = rest // len(wide)
        x = 0
        for p, w in zip(members, widths, strict=True):
            p["gridPos"] = {"h": 8, "w": w, "x": x, "y": y}
            panels.append(p)
            x += w
        y += 8
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return panels


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "yolofit: GPU memory fit of YOLO training jobs",
        "description": "VRAM estimate vs measured, admission, OOMs, throughput and operator "
                       "health. Generated by charts/yolofit/dashboards/gen.py.",
        "tags": ["yolofit", "gpu", "kubernetes"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            variable("namespace", "Namespace", "label_values(yolofit_jobs, namespace)"),
            variable("gpu_class", "GPU class", "label_values(yolofit_admitted_gpus, gpu_class)"),
        ]},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(rows()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(OUTPUT, render(), argv, Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
