"""`make demo`: yolofit end to end on the local control plane.

1. start (or reuse) the sandbox: a real kube-apiserver with simulated GPU nodes;
2. install the CRDs and start the operator with its admission webhooks;
3. apply a GPUCapacityPolicy and sample jobs: each comes back already fitted;
4. apply a job that cannot fit: `kubectl apply` refuses it with what would fit;
5. train the smallest job for real: its two pods' commands run as local processes (CPU,
   gloo), a real Prometheus scrapes them, and the job's status shows the measured peak
   next to the estimate.

The sandbox stays up afterwards so you can look around; `yolofit sandbox down` removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolofit.sandbox.localrun import local_command, log_tail, report_to_pods, start_pods, wait_pods
from yolofit.sandbox.paths import deploy_dir, tool
from yolofit.sandbox.prometheus import running_prometheus
from yolofit.sandbox.testing import wait_for

DEPLOY_DIR = deploy_dir()
EXAMPLES = DEPLOY_DIR / "examples"
DEMO_DIR = Path("/tmp/yolofit-demo")  # also the tiny job's hostPath (deploy/examples/tiny-job.yaml)
WORK = Path.home() / ".cache" / "yolofit" / "demo"


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.base = [tool("kubectl") or "kubectl", f"--kubeconfig={kubeconfig}"]

    def run(self, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        proc = subprocess.run([*self.base, *args], text=True, capture_output=True)
        out = (proc.stdout + proc.stderr).rstrip()
        if show and out:
            print(out, flush=True)
        return proc

    def __call__(self, *args: str, check: bool = True, show: bool = True) -> str:
        proc = self.run(*args, show=show)
        if check and proc.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json", show=False))


def job_phase(k: Kubectl, ns: str, name: str) -> str:
    return str(k.json("get", "ytj", name, "-n", ns).get("status", {}).get("phase", ""))


def start_control_plane() -> Path:
    """`yolofit sandbox up`: starts one, or returns the kubeconfig of the one running."""
    say("1/5  Local control plane with a simulated GPU fleet")
    proc = subprocess.run(local_command(["yolofit", "sandbox", "up"]), text=True,
                          stdout=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    return Path(proc.stdout.strip().splitlines()[-1])


def start_operator(k: Kubectl, kubeconfig: Path) -> Any:
    from yolofit.operator.testing import OperatorProcess

    say("2/5  CRDs and the operator (kopf) with its admission webhooks")
    k("apply", "--server-side", "-f", str(DEPLOY_DIR / "crds"))
    k("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", show=False)
    op = OperatorProcess(kubeconfig, WORK / "operator")
    op.start(timeout=120)
    print(f"operator running: metrics http://127.0.0.1:{op.metrics_port}/metrics, "
          f"log {op.log_path}")
    return op


def admit_samples(k: Kubectl) -> None:
    say("3/5  A capacity policy, then sample jobs: each comes back already fitted")
    for ns in ("team-a", "team-b"):
        k("create", "namespace", ns, check=False, show=False)
    k("apply", "-f", str(EXAMPLES / "policy.yaml"))
    k("apply", "-f", str(EXAMPLES / "jobs.yaml"))
    k("get", "ytj", "-A")
    # A model/size without a precomputed profile is admitted as Profiling and traced by the
    # operator off the request path; wait for those plans too.
    wait_for(lambda: not any(j.get("status", {}).get("phase") in (None, "Pending", "Profiling")
                             for j in k.json("get", "ytj", "-A")["items"]), 300,
             what="profiling")
    k("get", "ytj", "-A")


def show_gang(k: Kubectl) -> None:
    """yolo26l-hires (2 pods x 8 GPUs, pinned to a100-80gb by its spec, so it cannot move to
    another class) does not fit whole while yolov8x-dense holds one of the two A100 nodes:
    it waits Queued with what is short, and no pod of it holds a GPU (no partial gang)."""
    def phase_of(name: str, want: str) -> Callable[[], Any]:
        def check() -> Any:
            job = k.json("get", "ytj", name, "-n", "team-b")
            return job if job.get("status", {}).get("phase") == want else None
        return check

    # In this order, not in one apply: FIFO per namespace would admit the older gang first.
    wait_for(phase_of("yolov8x-dense", "Running"), 120, what="yolov8x-dense running")
    k("apply", "-f", str(EXAMPLES / "gang-job.yaml"))
    job = wait_for(phase_of("yolo26l-hires", "Queued"), 300,
                   what="yolo26l-hires to wait for room as a whole gang")
    print(f"yolo26l-hires: {job['status']['message']}")
    k("get", "pods", "-n", "team-b", "-l", "yolofit.io/job=yolo26l-hires", "-o",
      "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,GROUP:.spec.schedulingGroup."
      "podGroupName,PHASE:.status.phase")


def show_rejection(k: Kubectl) -> None:
    say("4/5  A job that cannot fit is refused at apply time, with what would fit")
    if k.run("apply", "-f", str(EXAMPLES / "rejected-job.yaml")).returncode == 0:
        raise SystemExit("demo: the impossible job was admitted; the webhook should refuse it")


def train_tiny(k: Kubectl, kubeconfig: Path) -> None:
    from kubernetes import client, config

    from yolofit.trainer.synthetic import make_synthetic_dataset

    say("5/5  Train the smallest job for real: two DDP ranks on CPU over gloo")
    for old in (WORK / "tiny", WORK / "prometheus", DEMO_DIR):  # a previous run's leftovers
        shutil.rmtree(old, ignore_errors=True)
    make_synthetic_dataset(DEMO_DIR / "tiny", n_train=16, n_val=4, imgsz=320, nc=2)
    k("apply", "-f", str(EXAMPLES / "tiny-job.yaml"))
    names = wait_for(lambda: _running_pods(k), 300, what="the tiny job's pods to run")
    print(f"pods {', '.join(names)} are Running on simulated nodes; "
          "running their containers here:")
    api = config.new_client_from_config(str(kubeconfig))
    core = client.CoreV1Api(api)
    pods = [api.sanitize_for_serialization(core.read_namespaced_pod(n, "team-b")) for n in names]
    local = start_pods(pods, WORK / "tiny", extra_env={"YOLOFIT_DEVICE": "cpu"},
                       config_patch={"linger_seconds": 6})
    targets = [f"127.0.0.1:{p.metrics_port}" for p in local if p.metrics_port]
    with running_prometheus({"yolofit-trainer": targets}, WORK / "prometheus") as prom:
        codes = wait_pods(local, timeout=900)
        for p, code in zip(local, codes, strict=True):
            print(f"   {p.name}: exit {code}")
            if code != 0:
                print(log_tail(p))
        # The ranks have exited, so their series are stale now: ask for the last 10 minutes.
        expr = "max_over_time(yolofit_trainer_host_peak_rss_bytes[10m])"
        series = prom.query(expr)
        print(f"Prometheus: {expr}")
        for s in series:
            m = s["metric"]
            print(f"   job={m.get('job')} rank={m.get('rank')} gpu_class={m.get('gpu_class')}"
                  f"  {float(s['value'][1]) / 2**30:.2f} GiB (host RSS; no GPU here)")
    report_to_pods(core, "team-b", local)
    phase = wait_for(lambda: job_phase(k, "team-b", "tiny") in ("Succeeded", "Failed")
                     and job_phase(k, "team-b", "tiny"), 120, what="the job to finish")
    print(f"job tiny: {phase}")
    k("get", "ytj", "tiny", "-n", "team-b")
    status = k.json("get", "ytj", "tiny", "-n", "team-b").get("status", {})
    print(json.dumps({"plan": status.get("plan", {}).get("estimate"),
                      "measured": status.get("measured")}, indent=2))
    results = status.get("results") or {}
    print(f"results of job tiny: {results.get('path')} on {results.get('storage')} "
          f"(epochs saved: {results.get('epochsDone', 0)}, checkpoint "
          f"{results.get('checkpoint') or 'none'})")


def _running_pods(k: Kubectl) -> list[str] | None:
    pods = k.json("get", "pods", "-n", "team-b", "-l", "yolofit.io/job=tiny")["items"]
    if len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods):
        return sorted(p["metadata"]["name"] for p in pods)
    return None


def main() -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    kubeconfig = start_control_plane()
    k = Kubectl(kubeconfig)
    k("get", "nodes", "-L", "nvidia.com/gpu.product,nvidia.com/gpu.memory,nvidia.com/gpu.count")
    # A previous demo run's objects would hide what this one does.
    k("delete", "namespace", "team-a", "team-b", "--ignore-not-found", "--wait=true",
      show=False, check=False)
    op = start_operator(k, kubeconfig)
    try:
        admit_samples(k)
        show_gang(k)
        show_rejection(k)
        train_tiny(k, kubeconfig)
    finally:
        op.stop(k)
    say("Done")
    print(f"The sandbox is still up: export KUBECONFIG={kubeconfig}; kubectl get ytj -A\n"
          "Stop it with: .venv/bin/yolofit sandbox down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
