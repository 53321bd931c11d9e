"""Failures on the real sandbox, each ending where a user sees it: refused at apply, or
`Failed` with a condition and an Event, every pod of the job gone and its quota free; or a
gang restarted whole after a disruption. The operator is the real `yolofit operator`
subprocess; the SIGKILL tests stop it at a chosen API request (kube.Failpoint) and restart
it: no pod twice, the OOM learned once, no relaunch with the old plan."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opfixtures import FAILING_NC, summary
from sandboxjobs import apply, finish_all, get_job, job_yaml, phase_is, pods_of, running_pods

from yolofit.operator.kube import Failpoint
from yolofit.sandbox.testing import finish_pod, wait_for

pytestmark = pytest.mark.integration
GiB = 2**30
FAST = {"restartBackoffSeconds": 0}  # relaunch a restarted gang at once


def condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in job["status"]["conditions"] if c["type"] == type_)


def events(kubectl: Callable[..., Any], ns: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"])


def live(kube: Any, ns: str, job: str) -> list[Any]:
    return [p for p in pods_of(kube, ns, job) if p.metadata.deletion_timestamp is None
            and p.status.phase not in ("Succeeded", "Failed")]


def quota_is_free(kubectl: Callable[..., Any], kube: Any, ns: str, gpus: int) -> None:
    """A job of `gpus` (the namespace's whole quota) gets its pods running."""
    apply(kubectl, job_yaml("after", ns, nodes=1, per_node=gpus))
    wait_for(running_pods(kube, ns, "after", 1), 30, what="the next job admitted and running")


def failed_visibly(kubectl: Callable[..., Any], kube: Any, ns: str, name: str, reason: str,
                   timeout: float = 30) -> dict[str, Any]:
    job = wait_for(phase_is(kubectl, ns, name, "Failed"), timeout, what=f"{name} Failed")
    cond = condition(job, "Failed")
    assert cond["status"] == "True" and cond["reason"] == reason, cond
    assert any(e["reason"] == reason and e["involvedObject"]["name"] == name
               for e in events(kubectl, ns)), f"no {reason} Event"
    wait_for(lambda: not live(kube, ns, name), 30, what=f"{name}'s pods deleted")
    return job


# --- refused or Failed, quota released ----------------------------------------------------

def test_invalid_cpu_quantity_is_refused_naming_the_field(operator: Any, kubectl: Any,
                                                          namespace: str) -> None:
    result = apply(kubectl, job_yaml("cpu", namespace, nodes=1, per_node=1,
                                     resources={"cpu": "four"}), check=False)
    assert result.returncode != 0
    assert "spec.resources.cpu: 'four' is not a Kubernetes quantity" in result.stderr


def test_a_volume_named_like_an_internal_one_is_refused(operator: Any, kubectl: Any,
                                                        namespace: str) -> None:
    result = apply(kubectl, job_yaml("shm", namespace, nodes=1, per_node=1,
                                     volumes=[{"name": "dshm", "emptyDir": {}}]), check=False)
    assert result.returncode != 0 and "spec.volumes[0].name: 'dshm' is reserved" in \
        result.stderr


def test_a_name_that_is_no_service_name_ends_refused_or_failed(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 4}])
    result = apply(kubectl, job_yaml("yolo.v8", namespace, nodes=1, per_node=4), check=False)
    if not isinstance(result, dict):  # refused at admission with the rule
        assert "metadata.name" in result.stderr
    else:  # the Service POST is refused (422): Failed, with the API's words
        job = failed_visibly(kubectl, kube, namespace, "yolo.v8", "Invalid")
        assert "POST /api/v1/namespaces" in job["status"]["message"]
        assert 'Service "yolo.v8" is invalid' in job["status"]["message"]
    quota_is_free(kubectl, kube, namespace, 4)


def test_a_forbidden_pod_create_fails_the_job_with_the_apis_message(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 4}])
    kube.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    apply(kubectl, job_yaml("denied", namespace, nodes=1, per_node=4))
    job = failed_visibly(kubectl, kube, namespace, "denied", "Forbidden")
    msg = job["status"]["message"]
    assert f"POST /api/v1/namespaces/{namespace}/pods (HTTP 403 Forbidden)" in msg
    assert "forbidden" in msg and "quota" in msg  # the apiserver's own message
    kube.delete_namespaced_resource_quota("no-pods", namespace)
    quota_is_free(kubectl, kube, namespace, 4)


def test_a_missing_pvc_fails_after_the_start_timeout(operator: Any, kubectl: Any, kube: Any,
                                                     namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 4}],
           failurePolicy={"podStartTimeoutSeconds": 3})
    apply(kubectl, job_yaml("nopvc", namespace, nodes=1, per_node=4, volumes=[
        {"name": "data", "persistentVolumeClaim": {"claimName": "coco"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}]))
    job = failed_visibly(kubectl, kube, namespace, "nopvc", "VolumeMissing", timeout=60)
    assert 'persistentvolumeclaim "coco" not found' in job["status"]["message"]
    quota_is_free(kubectl, kube, namespace, 4)


# --- the failure policy -------------------------------------------------------------------

def restarted(kubectl: Callable[..., Any], kube: Any, ns: str, name: str, attempt: int,
              nodes: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = get_job(kubectl, ns, name)
        pods = live(kube, ns, name)
        return job if (job["status"].get("attempt") == attempt and len(pods) == nodes and all(
            p.status.phase == "Running" and p.metadata.labels["yolofit.io/attempt"] ==
            str(attempt) for p in pods)) else None
    return wait_for(check, 60, what=f"{name} running as attempt {attempt}")


def test_an_evicted_pod_restarts_the_whole_gang(operator: Any, kubectl: Any, kube: Any,
                                                namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace}], failurePolicy=FAST)
    apply(kubectl, job_yaml("evict", namespace, nodes=2, per_node=1))
    first = wait_for(running_pods(kube, namespace, "evict", 2), 30, what="2 running pods")
    started = time.monotonic()
    kube.create_namespaced_pod_eviction("evict-worker-1", namespace, {
        "metadata": {"name": "evict-worker-1", "namespace": namespace}})
    job = restarted(kubectl, kube, namespace, "evict", 1, 2)
    took = time.monotonic() - started
    print(f"\nGANG-RESTART: eviction -> 2 pods of attempt 1 Running in {took:.2f}s")
    restart = job["status"]["restarts"]
    assert len(restart) == 1 and restart[0]["reason"] in ("Disrupted", "WorkerDeleted")
    assert "evict-worker-1" in restart[0]["message"]
    assert {p.metadata.uid for p in first}.isdisjoint(
        p.metadata.uid for p in live(kube, namespace, "evict"))  # rank 0 was replaced too
    for p in live(kube, namespace, "evict"):
        env = {e.name: e.value for e in p.spec.containers[0].env}
        assert json.loads(env["YOLOFIT_TRAIN_CONFIG"])["attempt"] == 1
    reasons = {e["reason"] for e in events(kubectl, namespace)}
    assert reasons & {"Disrupted", "WorkerDeleted"}
    finish_all(kube, namespace, "evict")
    wait_for(phase_is(kubectl, namespace, "evict", "Succeeded"), 30, what="Succeeded")


def test_signals_restart_the_gang_until_max_restarts_and_oomkilled_fails(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 2}],
           failurePolicy={**FAST, "maxRestarts": 2})
    apply(kubectl, job_yaml("sig", namespace, nodes=2, per_node=1))
    wait_for(running_pods(kube, namespace, "sig", 2), 30, what="2 running pods")
    finish_pod(kube, namespace, "sig-worker-0", 143)  # SIGTERM: a drain
    restarted(kubectl, kube, namespace, "sig", 1, 2)
    finish_pod(kube, namespace, "sig-worker-1", 137)  # SIGKILL after the grace period
    job = restarted(kubectl, kube, namespace, "sig", 2, 2)
    assert [r["reason"] for r in job["status"]["restarts"]] == ["Disrupted", "Disrupted"]
    finish_pod(kube, namespace, "sig-worker-1", 137, reason="OOMKilled")  # memory limit
    job = failed_visibly(kubectl, kube, namespace, "sig", "HostOutOfMemory")
    assert "spec.resources.memory" in job["status"]["message"]
    quota_is_free(kubectl, kube, namespace, 2)


def test_restarts_end_at_max_restarts(operator: Any, kubectl: Any, kube: Any,
                                      namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace}], failurePolicy={**FAST, "maxRestarts": 0})
    apply(kubectl, job_yaml("max", namespace, nodes=2, per_node=1))
    wait_for(running_pods(kube, namespace, "max", 2), 30, what="2 running pods")
    finish_pod(kube, namespace, "max-worker-0", 143)
    job = failed_visibly(kubectl, kube, namespace, "max", "MaxRestartsReached")
    assert "failurePolicy.maxRestarts 0" in job["status"]["message"]


def test_a_failing_rank_deletes_every_rank_and_frees_the_quota(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 2}])
    apply(kubectl, job_yaml("rank", namespace, nodes=2, per_node=1))
    wait_for(running_pods(kube, namespace, "rank", 2), 30, what="2 running pods")
    finish_pod(kube, namespace, "rank-worker-1", 1,
               message=summary(1, GiB, "error", "loss is NaN"))
    job = failed_visibly(kubectl, kube, namespace, "rank", "TrainerFailed")
    assert "loss is NaN" in job["status"]["message"] and not job["status"].get("restarts")
    assert [p.metadata.name for p in pods_of(kube, namespace, "rank")] == ["rank-worker-1"]
    quota_is_free(kubectl, kube, namespace, 2)


def test_max_replans_reached_fails_and_frees_everything(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 2}], maxReplans=0)
    apply(kubectl, job_yaml("oomx", namespace, nodes=2, per_node=1))
    wait_for(running_pods(kube, namespace, "oomx", 2), 30, what="2 running pods")
    finish_pod(kube, namespace, "oomx-worker-0", 88,
               message=summary(0, 15 * GiB, "oom", "CUDA out of memory"))
    job = failed_visibly(kubectl, kube, namespace, "oomx", "OutOfMemory")
    assert "policy limit 0" in job["status"]["message"]
    quota_is_free(kubectl, kube, namespace, 2)


def test_profiling_failed_ends_the_job_failed(operator: Any, kubectl: Any, kube: Any,
                                              namespace: str) -> None:
    apply(kubectl, job_yaml("trace", namespace, model="yolov8l", nodes=1, per_node=1,
                            classes=FAILING_NC))
    job = failed_visibly(kubectl, kube, namespace, "trace", "ProfilingFailed", timeout=90)
    assert "tracer crashed on yolov8l" in job["status"]["message"]
    assert not pods_of(kube, namespace, "trace")


def test_a_class_that_left_the_fleet_waits_queued_holding_no_quota(
        operator: Any, kubectl: Any, kube: Any, namespace: str, policy: Any) -> None:
    t4 = {"name": "t4", "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}
    a100 = {"name": "a100-80gb",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}
    rules = [{"namespace": namespace, "maxGpusAdmitted": 2}]
    policy(rules, classes=[t4, a100], failurePolicy=FAST)
    apply(kubectl, job_yaml("pinned", namespace, nodes=1, per_node=2, gpuClass="a100-80gb"))
    wait_for(running_pods(kube, namespace, "pinned", 1), 30, what="pinned job running")
    policy(rules, classes=[t4], failurePolicy=FAST)  # the a100s leave the fleet
    kube.create_namespaced_pod_eviction("pinned-worker-0", namespace, {
        "metadata": {"name": "pinned-worker-0", "namespace": namespace}})  # and its node
    job = wait_for(lambda: (j := get_job(kubectl, namespace, "pinned"))["status"].get(
        "message", "").startswith("GPU class a100-80gb") and j, 30, what="class gone")
    assert job["status"]["phase"] == "Queued" and not job["status"].get("admitted")
    assert len(job["status"]["restarts"]) == 1
    assert not live(kube, namespace, "pinned")
    # (It holds no quota; the namespace's FIFO queue still keeps later jobs behind it.)


# --- SIGKILL of the operator at an await, then a restart ----------------------------------

@pytest.fixture
def crashing(operator: Any) -> Iterator[Callable[[str], None]]:
    """crash_at(spec): restart the module's operator so that it SIGKILLs itself right after
    the request `spec` names ("METHOD path-regex count"). Restored afterwards."""

    def crash_at(spec: str) -> None:
        operator.kill()
        operator.env[Failpoint.ENV] = spec
        operator.start()

    try:
        yield crash_at
    finally:
        operator.env.pop(Failpoint.ENV, None)
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()


def died(operator: Any, what: str) -> None:
    assert operator.proc is not None
    try:
        code = operator.proc.wait(timeout=60)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"the operator never reached the failpoint ({what})") from exc
    assert code == -9, f"operator exited {code}:\n{operator.log_tail()}"
    operator.env.pop(Failpoint.ENV, None)
    operator.start()


LAUNCH_POINTS = [("POST", "/namespaces/{ns}/services$", 1),
                 ("POST", "/namespaces/{ns}/pods$", 1),
                 ("POST", "/namespaces/{ns}/pods$", 2),
                 ("PATCH", "/namespaces/{ns}/yolotrainingjobs/crash/status$", 1)]


@pytest.mark.parametrize(("method", "path", "count"), LAUNCH_POINTS,
                         ids=[f"{m} {p.split('/')[-1]} #{c}" for m, p, c in LAUNCH_POINTS])
def test_kill_9_at_each_await_of_launch(operator: Any, crashing: Any, kubectl: Any,
                                        kube: Any, namespace: str, method: str, path: str,
                                        count: int) -> None:
    crashing(f"{method} {path.format(ns=namespace)} {count}")
    apply(kubectl, job_yaml("crash", namespace, nodes=3, per_node=1))
    died(operator, f"{method} {path} #{count}")
    before = {p.metadata.name: p.metadata.uid for p in pods_of(kube, namespace, "crash")}
    pods = wait_for(running_pods(kube, namespace, "crash", 3), 60, what="3 running pods")
    assert [p.metadata.name for p in pods] == [f"crash-worker-{i}" for i in range(3)]
    for p in pods:  # made before the kill: kept, never made twice
        assert before.get(p.metadata.name, p.metadata.uid) == p.metadata.uid
    assert len(kube.list_namespaced_pod(namespace).items) == 3
    job = get_job(kubectl, namespace, "crash")
    assert job["status"]["admitted"] and job["status"]["attempt"] == 0


def observations(kubectl: Callable[..., Any], ns: str) -> int:
    raw = kubectl("get", "configmap", "-n", "yolofit-system", "yolofit-learned-margins",
                  "-o", "jsonpath={.data.margins\\.json}", check=False).stdout
    return int(json.loads(raw or "{}").get(f"{ns}|yolov8n|t4", {}).get("observations", 0))


OOM_POINTS = [("POST|PATCH", "/namespaces/yolofit-system/configmaps", 1),  # the margin
              ("PATCH", "/namespaces/{ns}/yolotrainingjobs/oomk/status$", 1),  # the re-plan
              ("DELETE", "/namespaces/{ns}/pods/oomk-worker-", 1)]  # the old pods


@pytest.mark.parametrize(("method", "path", "count"), OOM_POINTS,
                         ids=[f"{m} {p.split('/')[-2]} #{c}" for m, p, c in OOM_POINTS])
def test_kill_9_at_each_await_of_the_oom_replan(operator: Any, crashing: Any, kubectl: Any,
                                                kube: Any, namespace: str, method: str,
                                                path: str, count: int) -> None:
    first = apply(kubectl, job_yaml("oomk", namespace, nodes=2, per_node=1, nbs=64))
    wait_for(running_pods(kube, namespace, "oomk", 2), 30, what="2 running pods")
    learned = observations(kubectl, namespace)
    crashing(f"{method} {path.format(ns=namespace)} {count}")
    finish_pod(kube, namespace, "oomk-worker-1", 88,
               message=summary(1, 15 * GiB, "oom", "CUDA out of memory"))
    died(operator, f"{method} {path} #{count}")
    job = restarted(kubectl, kube, namespace, "oomk", 1, 2)
    plan = job["status"]["plan"]
    assert plan["batchPerGpu"] < first["spec"]["plan"]["batchPerGpu"]
    assert len(job["status"]["replans"]) == 1
    for p in live(kube, namespace, "oomk"):  # the new plan, never the old one
        env = {e.name: e.value for e in p.spec.containers[0].env}
        assert json.loads(env["YOLOFIT_TRAIN_CONFIG"])["batch_per_gpu"] == plan["batchPerGpu"]
    assert observations(kubectl, namespace) == learned + 1  # learned once, not twice
