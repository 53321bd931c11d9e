"""Operator at scale: 1,000 simulated GPU nodes in 4 classes, 1,000 jobs applied in a burst.

    .venv/bin/python benchmarks/operator_scale.py [--nodes 1000] [--jobs 1000] [--write]

Starts its own sandbox (kwok nodes built with the sandbox's fleet node builder), the CRDs
and `yolofit operator` with its webhooks (as in production, a subprocess), then POSTs the
jobs from --clients threads. Measures: webhook latency (the operator's handling of each
admission review, from its /debug/webhook-latency, and the client-side create latency,
which adds the apiserver, TLS and etcd), apply-to-all-pods-created time, jobs/s through
admission and launch, and the operator's CPU seconds and peak RSS (psutil). --write puts
the result into benchmarks/RESULTS.md under its own heading.

The floor: in the same run, the apiserver also calls a trivial always-allow webhook
(`floor.yolofit.io`, the same HTTPS server code answering "allowed" without looking) for
every job of the burst. The apiserver times both in its own histogram, so yolofit's p99
over the floor's p99 is the cost of yolofit's admission itself, on the same machine, load
and moment (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import psutil

from yolofit.sandbox.paths import tool

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Operator at scale (benchmarks/operator_scale.py)"
CLASSES = [  # name, product, MiB, GPUs per node, family
    ("t4", "Tesla-T4", 15360, 4, "turing"),
    ("a100", "NVIDIA-A100-SXM4-80GB", 81920, 8, "ampere"),
    ("h100", "NVIDIA-H100-80GB-HBM3", 81559, 8, "hopper"),
    ("h200", "NVIDIA-H200", 143771, 8, "hopper"),
]
PINNED = ["t4", "a100-80gb", "h100-80gb", "h200"]


def fleet(nodes: int) -> Any:
    from yolofit.sandbox.fleet import Fleet, NodeGroup

    per = nodes // len(CLASSES)
    return Fleet(node_groups=[NodeGroup(name=n, count=per, gpu_product=p, gpu_memory_mib=m,
                                        gpus=g, gpu_family=f, cpu="96", memory="1Ti")
                              for n, p, m, g, f in CLASSES])


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


class Sampler(threading.Thread):
    """Peak RSS of the operator process (and children: profiling workers)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


WEBHOOK_METRIC = "apiserver_admission_webhook_admission_duration_seconds_bucket"


def apiserver_webhook_buckets(client: Any) -> dict[str, dict[float, float]]:
    """The apiserver's own histogram of webhook call durations: name -> {le: count}."""
    request = client.param_serialize("GET", "/metrics", header_params={"Accept": "text/plain"},
                                     auth_settings=["BearerToken"])
    resp = client.call_api(*request)
    resp.read()
    out: dict[str, dict[float, float]] = {}
    for line in resp.data.decode().splitlines():
        if not line.startswith(WEBHOOK_METRIC + "{"):
            continue
        labels, value = line[len(WEBHOOK_METRIC) + 1:].rsplit("} ", 1)
        fields = dict(kv.split("=", 1) for kv in labels.split(","))
        name, le = fields["name"].strip('"'), fields["le"].strip('"')
        bound = float("inf") if le == "+Inf" else float(le)
        out.setdefault(name, {}).setdefault(bound, 0.0)
        out[name][bound] += float(value)
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def start_floor(work: Path) -> tuple[Any, bytes]:
    """An always-allow webhook server (a thread in this process) and its CA."""
    from yolofit.operator.admission_server import AdmissionServer
    from yolofit.operator.certs import ensure_certs
    from yolofit.operator.testing import free_port
    from yolofit.operator.webhooks import Snapshot

    def allow(kind: str, review: Any, snap: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": {"uid": review["request"]["uid"], "allowed": True}}

    certs = ensure_certs(work / "floor-certs", ["127.0.0.1", "localhost"])
    server = AdmissionServer(cast(Snapshot, None), "127.0.0.1", free_port(), certs.certfile,
                             certs.pkeyfile, handler=allow)
    server.start()
    return server, certs.ca_pem


def floor_configuration(server: Any, ca_pem: bytes) -> dict[str, Any]:
    from yolofit.operator.webhook_config import webhook_configurations

    _, validating = webhook_configurations("yolofit-floor", ca_pem,
                                           url=f"https://127.0.0.1:{server.port}")
    validating["webhooks"] = [{**validating["webhooks"][0], "name": "floor.yolofit.io",
                               "matchConditions": []}]
    return validating


def job(i: int, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": f"job-{i:04d}", "namespace": namespace},
            "spec": {"model": "yolov8n", "data": "/data/coco8.yaml", "gpuClass":
                     PINNED[i % len(PINNED)], "gpus": {"nodes": 1 + (i % 2), "perNode": 1}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8, help="threads POSTing jobs")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--no-webhooks", action="store_true",
                    help="baseline: no webhooks; the operator plans in its create handler")
    ap.add_argument("--operator-nice", type=int, default=None,
                    help="diagnostic: run the operator process at this niceness (e.g. -10)")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args()

    from kubernetes.client import CoreV1Api, CustomObjectsApi

    from yolofit.operator.testing import OperatorProcess, write_synthetic_profiles
    from yolofit.sandbox import Sandbox

    work = Path(tempfile.mkdtemp(prefix="yolofit-bench-"))
    t0 = time.monotonic()
    sb = Sandbox.up(fleet(args.nodes), ephemeral=True)
    print(f"sandbox with {args.nodes} nodes up in {time.monotonic() - t0:.1f}s", flush=True)
    op = None
    floor: Any = None
    try:
        kubectl = [tool("kubectl") or "kubectl", f"--kubeconfig={sb.kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", str(REPO / "deploy" / "crds")], check=True,
                       capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                        "crd/yolotrainingjobs.yolofit.io"], check=True, capture_output=True)
        for ns in ("yolofit-system", "bench"):
            subprocess.run([*kubectl, "create", "namespace", ns], check=True,
                           capture_output=True)
        write_synthetic_profiles(work / "profiles", "yolov8n")
        # The burst is one namespace: an explicit * rule without limits (the operator's
        # default rule would queue most of it).
        subprocess.run([*kubectl, "apply", "-f", "-"], check=True, capture_output=True,
                       text=True, input=json.dumps({
                           "apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
                           "metadata": {"name": "default"},
                           "spec": {"namespaces": [{"namespace": "*"}]}}))
        floor, floor_ca = start_floor(work)
        subprocess.run([*kubectl, "apply", "-f", "-"], check=True, capture_output=True,
                       text=True, input=json.dumps(floor_configuration(floor, floor_ca)))
        op = OperatorProcess(sb.kubeconfig, work / "operator",
                             env={"YOLOFIT_PROFILE_DIR": str(work / "profiles")},
                             install_webhooks=not args.no_webhooks)
        op.start(timeout=120)
        assert op.proc is not None
        proc = psutil.Process(op.proc.pid)
        if args.operator_nice is not None:
            proc.nice(args.operator_nice)  # only the operator this script started
        time.sleep(2)
        client = sb.api_client()
        client.configuration.connection_pool_maxsize = args.clients * 2
        custom, core = CustomObjectsApi(client), CoreV1Api(client)
        expected_pods = sum(1 + (i % 2) for i in range(args.jobs))

        sampler = Sampler(proc.pid)
        sampler.start()
        cpu0 = cpu_seconds(proc)
        latencies: list[float] = []
        refused: list[str] = []

        def create(i: int) -> None:
            started = time.perf_counter()
            try:
                custom.create_namespaced_custom_object("yolofit.io", "v1alpha1", "bench",
                                                       "yolotrainingjobs", job(i, "bench"))
            except Exception as exc:  # noqa: BLE001 - counted, reported
                refused.append(str(exc)[:200])
            latencies.append(time.perf_counter() - started)

        hooks_before = apiserver_webhook_buckets(client)
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(create, range(args.jobs)))
        applied = time.monotonic() - start
        print(f"applied {args.jobs} jobs in {applied:.1f}s ({len(refused)} refused)", flush=True)
        pods = 0
        while time.monotonic() - start < args.timeout:
            pods = len(core.list_namespaced_pod("bench", label_selector="yolofit.io/job").items)
            if pods >= expected_pods:
                break
            time.sleep(1.0)
        all_pods = time.monotonic() - start
        cpu = cpu_seconds(proc) - cpu0
        load_after = os.getloadavg()[0]
        sampler.stop.set()
        with urllib.request.urlopen(
                f"http://127.0.0.1:{op.health_port}/debug/webhook-latency") as r:
            hook = json.loads(r.read())
        seen = {}  # the apiserver's view of each webhook call, over the burst only
        for name, after in apiserver_webhook_buckets(client).items():
            before = hooks_before.get(name, {})
            delta = {b: c - before.get(b, 0.0) for b, c in after.items()}
            p50, p99 = histogram_quantile(0.5, delta), histogram_quantile(0.99, delta)
            seen[name] = {"p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
                          "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
                          "calls": int(delta.get(float("inf"), 0))}
        ours = [v for n, v in seen.items() if n != "floor.yolofit.io"]
        floor_p99 = seen.get("floor.yolofit.io", {}).get("p99_ms")
        worst = max((v["p99_ms"] for v in ours if v["p99_ms"] is not None), default=None)
        ratio = round(worst / floor_p99, 2) if worst and floor_p99 else None
        result = {
            "webhooks": not args.no_webhooks, "operator_nice": proc.nice(),
            "nodes": args.nodes, "jobs": args.jobs,
            "pods_expected": expected_pods,
            "pods_created": pods, "refused": len(refused), "clients": args.clients,
            "apply_seconds": round(applied, 2), "apply_to_all_pods_seconds": round(all_pods, 2),
            "jobs_per_second": round(args.jobs / all_pods, 2),
            "webhook_reviews": hook.get("count", 0),
            "webhook_p50_ms": hook.get("p50_ms"), "webhook_p99_ms": hook.get("p99_ms"),
            "webhook_max_ms": hook.get("max_ms"),
            "apiserver_webhook_call": seen,
            "floor_p99_ms": floor_p99, "yolofit_p99_ms": worst, "p99_ratio_to_floor": ratio,
            "loop_lag_p50_ms": hook.get("loop_lag", {}).get("p50_ms"),
            "loop_lag_p99_ms": hook.get("loop_lag", {}).get("p99_ms"),
            "create_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "create_p99_ms": round(pct(latencies, 0.99) * 1000, 1),
            "operator_cpu_seconds": round(cpu, 1),
            "operator_cpu_cores_avg": round(cpu / all_pods, 2),
            "operator_peak_rss_mib": round(sampler.peak / 2**20, 1),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(load_after, 2),
        }
        if refused:
            result["first_refusal"] = refused[0]
        print(json.dumps(result, indent=1))
        if args.write:
            write_results(result, args)
        return 0 if pods >= expected_pods and not refused else 1
    finally:
        if op is not None:
            op.stop()
        sb.down()
        if floor is not None:
            floor.stop()


def write_results(r: dict[str, Any], args: argparse.Namespace) -> None:
    cpus = os.cpu_count()
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    seen_text = "; ".join(f"{n}: {v['p50_ms']} / {v['p99_ms']} ms ({v['calls']} calls)"
                          for n, v in r["apiserver_webhook_call"].items()) or "n/a"
    section = f"""{HEADING}

Command: `.venv/bin/python benchmarks/operator_scale.py --nodes {args.nodes} --jobs {args.jobs} \
--clients {args.clients} --write`
Machine: {cpus} cores ({model}), {round(psutil.virtual_memory().total / 2**30)} GiB RAM, shared
with the whole sandbox (etcd, kube-apiserver, scheduler, controller-manager, kwok) and the
client; Python {platform.python_version()}. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.

Fleet: {args.nodes} kwok nodes in 4 classes (T4 x4, A100-80GB x8, H100-80GB x8, H200 x8).
Burst: {args.jobs} YOLOTrainingJobs (yolov8n, gpuClass pinned round-robin, 1 or 2 pods
each = {r['pods_expected']} pods) POSTed by {args.clients} client threads.

| metric | value | target |
| --- | --- | --- |
| webhook latency p50 / p99 / max (operator handling, {r['webhook_reviews']} reviews) | \
{r['webhook_p50_ms']} / {r['webhook_p99_ms']} / {r['webhook_max_ms']} ms | p99 < 50 ms |
| webhook call as the apiserver times it, p50 / p99 (histogram buckets 5/25/100/500 ms, \
interpolated) | {seen_text} | p99 < 50 ms |
| yolofit's p99 over the floor's p99 (floor.yolofit.io: always-allow, same server code, \
same burst) | {r['yolofit_p99_ms']} / {r['floor_p99_ms']} ms = {r['p99_ratio_to_floor']}x | \
<= 1.5x |
| admission-loop lag p50 / p99 (the webhooks' own event loop, in their own thread) | \
{r['loop_lag_p50_ms']} / {r['loop_lag_p99_ms']} ms | |
| create latency p50 / p99 (client: apiserver + both webhooks + etcd) | \
{r['create_p50_ms']} / {r['create_p99_ms']} ms | |
| apply of all jobs | {r['apply_seconds']} s | |
| apply to all pods created | {r['apply_to_all_pods_seconds']} s \
({r['pods_created']}/{r['pods_expected']} pods) | |
| jobs/s through admission and launch | {r['jobs_per_second']} | >= 20 |
| operator CPU | {r['operator_cpu_seconds']} s ({r['operator_cpu_cores_avg']} cores avg) | |
| operator peak RSS | {r['operator_peak_rss_mib']} MiB | |
| refused | {r['refused']} | 0 |

1-minute load average {r['load_average_before']} before the burst, {r['load_average_after']}
after, on {cpus} cores. The operator itself used {r['operator_cpu_cores_avg']} of them on
average; the rest went to the control plane (the apiserver, etcd, kwok's {args.nodes:,} node
heartbeats, the scheduler), the POSTing client and whatever else shared the machine.
"""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if HEADING in text:
        head, _, rest = text.partition(HEADING)
        nxt = rest.find("\n## ")
        text = head + section + ("\n" + rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
