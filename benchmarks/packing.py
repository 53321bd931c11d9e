"""Packing YOLO jobs: whole GPUs only vs right-sized (MIG slices, then DRA memory claims).

    .venv/bin/python benchmarks/packing.py [--jobs 120] [--seed 0] [--write]

One run, three scenarios on the same hardware: the sandbox fleet (deploy/fleet.yaml: 4 T4
nodes, 3 A100-80GB, 3 H100-80GB, 1 H200; 8 GPUs each except the T4s' 4):

  whole    no MIG: the two MIG nodes' cards are whole GPUs; every job gets whole GPUs.
  mig      the fleet as deploy/fleet.yaml has it (one A100 node all-1g.10gb, one H100 node
           all-balanced); single-rank jobs take the smallest slice that fits
           (GPUCapacityPolicy migPreference: smallest-first), multi-rank jobs whole GPUs.
  mig+dra  as mig, but whole-GPU classes are DRA memory claims: a pod asks for any GPU with
           at least the memory its plan needs (device.capacity["gpu.nvidia.com"].memory),
           so a job planned on a T4 may run on a free A100 and the reverse.

Every job is planned by yolofit's real admission (`admission.decide`, shipped traced
profiles of yolo11n-x at 320/640/1280), and the pods are built by the real builders
(launch.build_pod + sharing.apply_pod). Placement is a discrete-event simulation of the
fleet's devices as the sandbox publishes them (device-plugin allocatable and DRA
ResourceSlices, yolofit/sandbox/{fleet,dra}.py): gang placement (all pods of a job or none),
FIFO with backfill, first fit in fleet order. It is not kube-scheduler binding pods: the
sandbox tests (tests/operator/test_sharing_sandbox.py) show the real scheduler placing MIG
and DRA pods; this benchmark measures what those placements do to a queue of 100+ jobs,
which a 2-core shared box cannot run through the real control plane in minutes. --sandbox
cross-checks the simulator: a burst of the first --burst jobs goes through a real sandbox
per scenario (kube-scheduler binds, kwok runs) and both counts of running jobs are reported.

The job mix (`MIX`) and durations are assumptions, stated with their reasons below.
--write puts the result into benchmarks/RESULTS.md under its own heading.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolofit.estimator.profile import ProfileStore  # noqa: E402
from yolofit.operator import admission, launch  # noqa: E402
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec  # noqa: E402
from yolofit.operator.fleet import ClassInfo, node_from_object  # noqa: E402
from yolofit.operator.policy import effective_classes  # noqa: E402
from yolofit.operator.sharing import apply as sharing  # noqa: E402
from yolofit.operator.sharing.base import Sharing  # noqa: E402
from yolofit.sandbox.dra import resource_slices  # noqa: E402
from yolofit.sandbox.fleet import Fleet, default_fleet_path, fleet_nodes, load_fleet  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Packing: whole GPUs vs MIG slices and DRA claims (benchmarks/packing.py)"
MiB = 2**20

# (weight %, models, imgsz, (nodes, GPUs per node) choices). Why this mix: on a shared
# platform most YOLO jobs are fine-tunes and experiments of the small scales at the default
# 640 on one GPU (Ultralytics' own examples and most user reports); 320 stands for quick
# sweeps, 1280 for small-object data (aerial, documents); a few production trainings of
# the large scales take 4-16 GPUs and most of the GPU-hours.
MIX: list[tuple[int, list[str], int, list[tuple[int, int]]]] = [
    (30, ["yolo11n"], 640, [(1, 1)]),
    (15, ["yolo11s"], 640, [(1, 1)]),
    (10, ["yolo11n", "yolo11s"], 320, [(1, 1)]),
    (15, ["yolo11m"], 640, [(1, 1), (1, 2)]),
    (10, ["yolo11l"], 640, [(1, 4)]),
    (8, ["yolo11x"], 640, [(1, 8)]),
    (7, ["yolo11s", "yolo11m"], 1280, [(1, 2), (1, 4)]),
    (5, ["yolo11x"], 1280, [(2, 8)]),
]
# A100-hours of one job at 640 (a fine-tune of ~50 epochs on a few thousand images), per
# scale: an assumption, sized so that the whole-GPU fleet is busy but not hopeless.
GPU_HOURS = {"n": 0.5, "s": 1.0, "m": 3.0, "l": 5.0, "x": 8.0}
# Training speed relative to an A100 (public YOLO training throughput comparisons, rough);
# a MIG slice runs at (g/7)^0.6 of its card: small YOLO models do not fill a whole card.
SPEED = {"turing": 0.25, "ampere": 1.0, "hopper": 1.6}
H200_SPEED = 1.7
MEAN_ARRIVAL_MIN = 3.0


@dataclass
class Device:
    node: str
    group: str
    kind: str  # gpu or mig
    product: str
    family: str
    memory_mib: int
    card_mib: int
    profile: str = ""
    busy: bool = False

    @property
    def speed(self) -> float:
        base = H200_SPEED if self.product == "NVIDIA-H200" else SPEED[self.family]
        if self.kind == "mig":
            return float(base * (int(self.profile.split("g.")[0][-1]) / 7) ** 0.6)
        return base


@dataclass
class Job:
    index: int
    spec: YOLOTrainingJobSpec
    arrival: float
    gpu_hours: float
    plan: Plan | None = None
    info: ClassInfo | None = None
    start: float = 0.0
    devices: list[Device] = field(default_factory=list)


def make_jobs(n: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    weights = [w for w, *_ in MIX]
    jobs, t = [], 0.0
    for i in range(n):
        _, models, imgsz, shapes = rng.choices(MIX, weights)[0]
        model, (nodes, per_node) = rng.choice(models), rng.choice(shapes)
        spec = YOLOTrainingJobSpec.model_validate({
            "model": model, "data": "/data/d.yaml", "imgsz": imgsz,
            "gpus": {"nodes": nodes, "perNode": per_node}})
        hours = GPU_HOURS[model[-1]] * (imgsz / 640) ** 2 * rng.lognormvariate(0, 0.4)
        jobs.append(Job(i, spec, t, hours))
        t += rng.expovariate(1 / MEAN_ARRIVAL_MIN)
    return jobs


def whole_fleet(fleet: Fleet) -> Fleet:
    """The same hardware with MIG off: the partitioned cards are whole GPUs again."""
    return fleet.model_copy(update={"node_groups": [g.model_copy(update={"mig": None})
                                                   for g in fleet.node_groups]})


def devices_of(fleet: Fleet) -> list[Device]:
    groups = {g.name: g for g in fleet.node_groups}
    out = []
    everything = fleet.model_copy(update={"node_groups": [g.model_copy(update={"dra": True})
                                                         for g in fleet.node_groups]})
    for sl in resource_slices(everything):
        node = sl["spec"]["nodeName"]
        g = groups[node.rsplit("-", 1)[0]]
        for d in sl["spec"]["devices"]:
            a = d["attributes"]
            out.append(Device(node, g.name, a["type"]["string"], g.gpu_product, g.gpu_family,
                              int(d["capacity"]["memory"]["value"].removesuffix("Mi")),
                              g.gpu_memory_mib, a.get("profile", {}).get("string", "")))
    return out


def classes_for(fleet: Fleet, scenario: str) -> tuple[GPUCapacityPolicySpec,
                                                       dict[str, ClassInfo]]:
    pref = "off" if scenario == "whole" else "smallest-first"
    policy = GPUCapacityPolicySpec.model_validate({"migPreference": pref})
    nodes = [n for o in fleet_nodes(fleet) if (n := node_from_object(o)) is not None]
    classes = effective_classes(policy, nodes)
    if scenario == "mig+dra":
        classes = {k: c if c.sharing.is_mig else replace(
            c, sharing=Sharing(backend="dra", device_class="gpu.nvidia.com"))
            for k, c in classes.items()}
    return policy, classes


def wants(pod: dict[str, Any], plan: Plan, info: ClassInfo) -> Any:
    """A predicate on devices for one GPU of this pod, read off the pod the builders made."""
    spec = pod["spec"]
    if spec.get("resourceClaims"):  # DRA: any GPU with the memory (and bf16 when planned)
        return lambda d: (d.kind == "gpu" and d.memory_mib * MiB >= plan.requested_bytes
                          and (plan.amp != "bf16" or d.family != "turing"))
    product = spec["nodeSelector"]["nvidia.com/gpu.product"]
    limits = spec["containers"][0]["resources"]["limits"]
    mig = [r.removeprefix("nvidia.com/mig-") for r in limits if r.startswith("nvidia.com/mig-")]
    if mig:
        return lambda d: d.kind == "mig" and d.product == product and d.profile == mig[0]
    return lambda d: d.kind == "gpu" and d.product == product


def place(job: Job, devices: list[Device], by_node: list[str]) -> list[Device] | None:
    """All pods of the job or nothing; first fit in fleet order."""
    assert job.plan is not None and job.info is not None
    body = {"metadata": {"name": f"j{job.index}", "namespace": "bench", "uid": "u"}}
    taken: list[Device] = []
    for rank in range(job.plan.nodes):
        pod = launch.build_pod(body, job.spec, job.plan, rank, 0, job.info.node_selector,
                               job.info.tolerations)
        pod = sharing.apply_pod(pod, job.plan, job.info, 0)
        ok = wants(pod, job.plan, job.info)
        for node in by_node:
            free = [d for d in devices if d.node == node and not d.busy and d not in taken
                    and ok(d)]
            if len(free) >= job.plan.gpus_per_node:
                taken += free[:job.plan.gpus_per_node]
                break
        else:
            return None
    return taken


def simulate(fleet: Fleet, scenario: str, jobs: list[Job],
             store: ProfileStore) -> dict[str, Any]:
    policy, classes = classes_for(fleet, scenario)
    devices = devices_of(fleet)
    if scenario == "whole":
        devices = [d for d in devices if d.kind == "gpu"]
    by_node = list(dict.fromkeys(d.node for d in devices))
    jobs = [Job(j.index, j.spec, j.arrival, j.gpu_hours) for j in jobs]
    refused = 0
    for j in jobs:
        d = admission.decide(f"j{j.index}", "bench", j.spec, policy, classes, store)
        if d.plan is None:
            refused += 1
            continue
        j.plan, j.info = d.plan, classes[d.plan.gpu_class]
    queue = [j for j in jobs if j.plan is not None]
    events: list[tuple[float, int, str]] = [(j.arrival, j.index, "arrive") for j in queue]
    heapq.heapify(events)
    by_index = {j.index: j for j in queue}
    waiting: list[Job] = []
    running: set[int] = set()
    samples: list[tuple[float, int]] = []
    waits, requested, predicted, gpu_eq, devices_asked = [], 0, 0, 0.0, 0
    now = 0.0
    while events:
        now, index, kind = heapq.heappop(events)
        if kind == "arrive":
            waiting.append(by_index[index])
        else:
            for dev in by_index[index].devices:
                dev.busy = False
            running.discard(index)
        for job in list(waiting):  # FIFO with backfill
            got = place(job, devices, by_node)
            if got is None:
                continue
            for dev in got:
                dev.busy = True
            assert job.plan is not None
            job.devices, job.start = got, now
            waiting.remove(job)
            running.add(job.index)
            waits.append(now - job.arrival)
            speed = min(d.speed for d in got) * len(got) ** 0.9
            heapq.heappush(events, (now + 60 * job.gpu_hours / speed, job.index, "finish"))
            requested += sum(d.memory_mib * MiB for d in got)
            predicted += job.plan.predicted_device_bytes * len(got)
            gpu_eq += sum(d.memory_mib / d.card_mib for d in got)
            devices_asked += len(got)
        samples.append((now, len(running)))
    makespan = now
    area = sum((t2 - t1) * n for (t1, n), (t2, _) in zip(samples, samples[1:], strict=False))
    unplaced = len(waiting)
    return {
        "scenario": scenario, "jobs": len(jobs), "refused": refused, "never_placed": unplaced,
        "devices": devices_asked, "gpu_equivalents": round(gpu_eq, 1),
        "peak_running": max(n for _, n in samples), "mean_running": round(area / makespan, 1),
        "wait_mean_min": round(statistics.fmean(waits), 1),
        "wait_p90_min": round(statistics.quantiles(waits, n=10)[-1], 1),
        "predicted_share": round(predicted / requested, 3), "makespan_h": round(makespan / 60, 1),
        "on_mig": sum(1 for j in queue if j.info is not None and j.info.sharing.is_mig),
    }


def planned(fleet: Fleet, scenario: str, jobs: list[Job], store: ProfileStore) -> list[Job]:
    policy, classes = classes_for(fleet, scenario)
    out = []
    for j in jobs:
        d = admission.decide(f"j{j.index}", "bench", j.spec, policy, classes, store)
        if d.plan is not None:
            out.append(Job(j.index, j.spec, 0.0, j.gpu_hours, d.plan, classes[d.plan.gpu_class]))
    return out


def burst_simulated(fleet: Fleet, scenario: str, jobs: list[Job]) -> int:
    """Jobs the simulator starts when all arrive at once and none finishes."""
    devices = devices_of(fleet)
    if scenario == "whole":
        devices = [d for d in devices if d.kind == "gpu"]
    by_node = list(dict.fromkeys(d.node for d in devices))
    started = 0
    for job in jobs:
        got = place(job, devices, by_node)
        if got is not None:
            for dev in got:
                dev.busy = True
            started += 1
    return started


def burst_on_sandbox(fleet: Fleet, scenario: str, jobs: list[Job]) -> int:
    """The same burst through the real control plane: pods built by the operator's builders,
    bound by kube-scheduler (device plugin resources and DRA claims), run by kwok. Returns
    the jobs whose pods all run once the scheduler has settled."""
    import json

    from kubernetes.client import CoreV1Api, ResourceV1Api

    from yolofit.sandbox import Sandbox
    from yolofit.sandbox.testing import wait_for

    sb = Sandbox.up(fleet=fleet, ephemeral=True)
    client = sb.api_client()
    try:
        # Plain dicts go through the client as they are (it serialises them unchanged).
        core: Any = CoreV1Api(client)
        res: Any = ResourceV1Api(client)
        core.create_namespace({"metadata": {"name": "bench"}})
        wait_for(lambda: core.list_namespaced_service_account("bench").items, 60,
                 what="the default ServiceAccount")
        for job in jobs:
            assert job.plan is not None and job.info is not None
            body = {"metadata": {"name": f"j{job.index}", "namespace": "bench", "uid": "u"}}
            for _, child in sharing.children(body, job.plan, job.info, 0):
                child["metadata"].pop("ownerReferences")
                res.create_namespaced_resource_claim_template("bench", child)
            for rank in range(job.plan.nodes):
                pod = launch.build_pod(body, job.spec, job.plan, rank, 0,
                                       job.info.node_selector, job.info.tolerations,
                                       gated=False)
                pod = sharing.apply_pod(pod, job.plan, job.info, 0)
                pod["metadata"].pop("ownerReferences")
                core.create_namespaced_pod("bench", pod)
        last: list[int] = []

        def settled() -> int | None:
            pods = json.loads(core.list_namespaced_pod("bench", _preload_content=False).data)
            running: dict[str, int] = {}
            undecided = 0
            for p in pods["items"]:
                job = p["metadata"]["labels"]["yolofit.io/job"]
                if p["status"].get("phase") == "Running":
                    running[job] = running.get(job, 0) + 1
                elif not any(c.get("reason") == "Unschedulable"
                             for c in p["status"].get("conditions") or []):
                    undecided += 1
            whole = sum(1 for j in jobs if running.get(f"j{j.index}", 0) == (
                j.plan.nodes if j.plan else 0))
            last.append(whole)
            return whole if undecided == 0 and last[-5:] == [whole] * 5 else None

        return wait_for(settled, 180, interval=1.0, what="the scheduler to settle")
    finally:
        client.close()
        sb.down()


ROWS = [("GPUs requested (GPU-equivalents: a MIG slice counts its share of the card)",
         "gpu_equivalents"), ("devices requested (cards + slices)", "devices"),
        ("jobs on a MIG slice", "on_mig"),
        ("jobs running at once, peak", "peak_running"),
        ("jobs running at once, time-weighted mean", "mean_running"),
        ("queue wait, mean (min)", "wait_mean_min"), ("queue wait, p90 (min)", "wait_p90_min"),
        ("share of the memory held (capacity of the cards/slices given) predicted to be used",
         "predicted_share"),
        ("makespan (h)", "makespan_h"), ("refused at admission", "refused")]


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]
    head = "| metric | " + " | ".join(r["scenario"] for r in results) + " | " + " | ".join(
        f"{r['scenario']} / whole" for r in results[1:]) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(results) - 1)]
    for title, key in ROWS:
        ratios = [f"{r[key] / base[key]:.2f}" if base[key] else "-" for r in results[1:]]
        lines.append(f"| {title} | " + " | ".join(str(r[key]) for r in results) + " | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


CROSS_CHECK = """

The last row checks the simulator against the real control plane: the first jobs' pods,
built by the operator's builders (MIG resources, DRA claim templates), all submitted at once
to a fresh sandbox per scenario, bound by kube-scheduler and run by kwok. kube-scheduler
binds pod by pod (no gang here) and spreads across nodes, so its counts differ from the
simulator's first fit by a few jobs, in the same order across scenarios."""


def write_results(text: str, args: argparse.Namespace, seconds: float) -> None:
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    mix = "; ".join(f"{w}% {'/'.join(m)} @{s} on " + " or ".join(f"{a}x{b}" for a, b in g)
                    for w, m, s, g in MIX)
    section = f"""{HEADING}

Command: `.venv/bin/python benchmarks/packing.py --jobs {args.jobs} --seed {args.seed} \
{"--sandbox --burst " + str(args.burst) + " " if args.sandbox else ""}--write`
Machine: {os.cpu_count()} cores ({model}), shared with other work; Python \
{platform.python_version()}; {seconds:.1f} s. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.

Plans from yolofit's admission (shipped traced profiles); placement simulated on the sandbox
fleet's devices (gang, FIFO with backfill, first fit), not bound by kube-scheduler - see the
module docstring. Mix ({args.jobs} jobs, Poisson arrivals every {MEAN_ARRIVAL_MIN:g} min on
average): {mix}. Durations: A100-hours per job at 640 of {GPU_HOURS} x (imgsz/640)^2 x
lognormal(0, 0.4), sped up by the card (T4 0.25, H100 1.6, H200 1.7) and GPUs^0.9; a MIG
slice runs at (g/7)^0.6 of its card.

{text}

Reading: with whole GPUs only, the default preference (smallest card first) sends most
single-GPU jobs to the 16 T4s, which become the queue. MIG slices take the single-rank jobs
(multi-rank ones never get one) and cut the GPU-equivalents asked for. DRA claims let a
whole-GPU job run on any free card with the memory its plan needs, which empties the queue,
but the share of held memory drops: a claim holds a whole device, and the scheduler takes
the first device with enough memory, not the smallest.{CROSS_CHECK if args.sandbox else ""}
"""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if HEADING in current:
        head, _, rest = current.partition(HEADING)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        current = head + section.rstrip() + "\n" + tail
    else:
        current = current.rstrip() + "\n\n" + section
    RESULTS.write_text(current)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    ap.add_argument("--sandbox", action="store_true", help="also submit a burst of the first "
                    "--burst jobs to a real sandbox per scenario and compare how many the "
                    "kube-scheduler runs with the simulator's count")
    ap.add_argument("--burst", type=int, default=40)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    fleet = load_fleet(default_fleet_path())
    store = ProfileStore()
    jobs = make_jobs(args.jobs, args.seed)
    results = [simulate(whole_fleet(fleet), "whole", jobs, store),
               simulate(fleet, "mig", jobs, store), simulate(fleet, "mig+dra", jobs, store)]
    text = table(results)
    if args.sandbox:
        burst = jobs[:args.burst]
        line = ["| jobs running at once after a burst of "
                f"{len(burst)} (none finishing): simulator / kube-scheduler"]
        for scenario, fl in (("whole", whole_fleet(fleet)), ("mig", fleet),
                             ("mig+dra", fleet)):
            todo = planned(fl, scenario, burst, store)
            line.append(f"{burst_simulated(fl, scenario, todo)} / "
                        f"{burst_on_sandbox(fl, scenario, todo)}")
            print(line[-1], flush=True)
        text += "\n" + " | ".join(line) + " | | |"
    print(text)
    if args.write:
        write_results(text, args, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
