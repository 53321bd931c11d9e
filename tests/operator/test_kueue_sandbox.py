"""yolofit with the real Kueue on the sandbox: Kueue v0.19.2's manager built from its Go
module, its CRDs and webhooks from the module's source, jobs queued as plain pod groups.

Two teams' ClusterQueues with GPU quota on two flavors (t4, a100-80gb); jobs queue and are
admitted in order and within quota; a higher-priority job preempts a lower one and the
preempted gang comes back as a new attempt; a job whose plan needs a flavor with no quota
waits with Kueue's reason in its status; a MIG-slice job is admitted under the queues
`yolofit kueue` renders from the policy and the sandbox's real nodes.
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opfixtures import summary

from yolofit.operator import kueue as kq
from yolofit.operator import kueue_objects
from yolofit.operator.api import GPUCapacityPolicySpec
from yolofit.sandbox.kueue import fleet_capacity
from yolofit.sandbox.testing import finish_pod
from yolofit.sandbox.testing import wait_for as _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kueue]
GiB = 2**30
T4 = {"nvidia.com/gpu.product": "Tesla-T4"}
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
TOL = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
CLASSES = [{"name": "t4", "nodeSelector": T4, "tolerations": TOL},
           {"name": "a100-80gb", "nodeSelector": A100, "tolerations": TOL},
           {"name": "h100-80gb", "nodeSelector": H100, "tolerations": TOL}]
API = "kueue.x-k8s.io/v1beta2"
CLUSTER_QUEUES: list[str] = []  # made by the tests, deleted with Kueue


# ---- fixtures: Kueue on the session's sandbox, its flavors and priorities ----

@pytest.fixture(scope="module")
def kueue_running(sandbox: Any, kubectl: Callable[..., Any]) -> Iterator[Any]:
    from yolofit.sandbox.kueue import WEBHOOK_NAMES, start_kueue
    from yolofit.sandbox.sandbox import print_progress

    running = None
    if not hasattr(sandbox, "pki"):  # YOLOFIT_TEST_KUBECONFIG: `sandbox up --with-kueue`
        found = kubectl("get", "mutatingwebhookconfiguration",
                        WEBHOOK_NAMES["MutatingWebhookConfiguration"], check=False)
        if found.returncode != 0:
            pytest.skip("the external cluster runs no Kueue (yolofit sandbox up --with-kueue)")
    else:
        t0 = time.monotonic()
        running = start_kueue(sandbox.dir, sandbox.pki, sandbox.server, print_progress)
        print(f"\nkueue started in {time.monotonic() - t0:.1f}s: {running.timings}")
    objs = [{"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": name},
             "spec": {"nodeLabels": labels}}
            for name, labels in (("t4", T4), ("a100-80gb", A100), ("h100-80gb", H100))]
    objs += [{"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": name},
              "value": value} for name, value in (("low", 100), ("high", 1000))]
    kubectl("apply", "--server-side", "-f", "-",
            input="\n---\n".join(json.dumps(o) for o in objs))
    try:
        yield running
    finally:
        if CLUSTER_QUEUES:
            kubectl("delete", "clusterqueue", *CLUSTER_QUEUES, "--ignore-not-found",
                    "--wait=false", check=False)
        if running is not None:
            running.stop()


@pytest.fixture
def kueue_policy(kueue_running: Any, policy: Callable[..., None]) -> Callable[..., None]:
    """Set the GPUCapacityPolicy with explicit classes (one per flavor)."""

    def apply(namespaces: list[dict[str, Any]]) -> None:
        policy(namespaces, classes=CLASSES, preference=["t4", "a100-80gb", "h100-80gb"])
    return apply


def team_queue(kubectl: Callable[..., Any], ns: str, quotas: dict[str, int],
               preemption: bool = True) -> str:
    """A ClusterQueue for namespace `ns` (GPU quota per flavor) and LocalQueue `lq` in it."""
    cq = f"cq-{ns}"[:63]
    flavors = [{"name": f, "resources": [{"name": "cpu", "nominalQuota": "1000"},
                                         {"name": "memory", "nominalQuota": "10Ti"},
                                         {"name": "nvidia.com/gpu", "nominalQuota": str(g)}]}
               for f, g in quotas.items()]
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                            "flavors": flavors}]}
    if preemption:
        spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
    objs = [{"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": cq}, "spec": spec},
            {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": "lq", "namespace": ns},
             "spec": {"clusterQueue": cq}}]
    kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))
    CLUSTER_QUEUES.append(cq)
    return cq


@pytest.fixture
def second_namespace(kube: Any) -> Iterator[str]:
    name = f"t-kueue-b-{secrets.token_hex(3)}"
    kube.create_namespace({"metadata": {"name": name, "labels": {"yolofit.io/test": "true"}}})
    wait_for(lambda: _has_sa(kube, name), 30, what=f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        kube.delete_namespace(name, propagation_policy="Background")


def _has_sa(kube: Any, ns: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        kube.read_namespaced_service_account("default", ns)
        return True
    except ApiException:
        return False


# ---- helpers ----

DUMP: list[Callable[..., Any]] = []  # the session's kubectl, for what a timeout shows


@pytest.fixture(autouse=True)
def _dump_with(kubectl: Callable[..., Any]) -> Iterator[None]:
    DUMP[:] = [kubectl]
    yield
    DUMP.clear()


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    """yolofit.sandbox.testing.wait_for; a timeout also shows every job's phase and message
    and every Workload's conditions (Kueue's timing is what these tests wait on)."""
    try:
        return _wait_for(fn, timeout, interval, what=what)
    except AssertionError as exc:
        if not DUMP:
            raise
        jobs = DUMP[0]("get", "ytj", "-A", "--no-headers", "-o", "custom-columns=NS:.metadata."
                       "namespace,NAME:.metadata.name,PHASE:.status.phase,ATTEMPT:.status."
                       "attempt,MESSAGE:.status.message", check=False).stdout
        wls = DUMP[0]("get", "workloads.kueue.x-k8s.io", "-A", "--no-headers", "-o",
                      "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,CONDITIONS:"
                      ".status.conditions[*].type,STATUS:.status.conditions[*].status",
                      check=False).stdout
        raise AssertionError(f"{exc}\njobs:\n{jobs}\nworkloads:\n{wls}") from None


def submit(kubectl: Callable[..., Any], ns: str, name: str, nodes: int = 2, per_node: int = 4,
           queue: str | None = "lq", priority: str | None = None, **spec: Any) -> Any:
    labels = {}
    if queue:
        labels[kq.QUEUE_LABEL] = queue
    if priority:
        labels[kq.PRIORITY_LABEL] = priority
    body = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"model": "yolov8n", "data": "/data/coco8.yaml",
                     "gpus": {"nodes": nodes, "perNode": per_node}, **spec}}
    return json.loads(kubectl("apply", "-o", "json", "-f", "-", input=json.dumps(body)).stdout)


def job(kubectl: Callable[..., Any], ns: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "ytj", "-n", ns, name, "-o", "json").stdout)


def status(kubectl: Callable[..., Any], ns: str, name: str) -> dict[str, Any]:
    return job(kubectl, ns, name).get("status") or {}


def phase(kubectl: Callable[..., Any], ns: str, name: str, want: str,
          words: str = "") -> Callable[[], Any]:
    def check() -> Any:
        st = status(kubectl, ns, name)
        return st if st.get("phase") == want and words in st.get("message", "") else None
    return check


def live_pods(kube: Any, ns: str, name: str) -> list[Any]:
    pods = kube.list_namespaced_pod(ns, label_selector=f"yolofit.io/job={name}").items
    return sorted((p for p in pods if p.metadata.deletion_timestamp is None),
                  key=lambda p: p.metadata.name)


def running(kube: Any, ns: str, name: str, n: int = 2, attempt: int | None = None
            ) -> Callable[[], Any]:
    def check() -> Any:
        pods = live_pods(kube, ns, name)
        ok = len(pods) == n and all(p.status.phase == "Running" for p in pods) and (
            attempt is None or all(p.metadata.labels["yolofit.io/attempt"] == str(attempt)
                                   for p in pods))
        return pods if ok else None
    return check


def finish(kube: Any, ns: str, name: str) -> None:
    for i, pod in enumerate(live_pods(kube, ns, name)):
        finish_pod(kube, ns, pod.metadata.name, 0, message=summary(i, 3 * GiB))


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st.get("conditions") or []}


# ---- tests ----

def test_two_teams_queue_in_order_within_quota_on_two_flavors(
        operator: Any, kueue_policy: Callable[..., None], kubectl: Any, kube: Any,
        namespace: str, second_namespace: str) -> None:
    team_a, team_b = namespace, second_namespace
    # team-a by the job label; team-b by its policy rule (no label on its jobs).
    kueue_policy([{"namespace": team_b, "kueueQueue": "lq", "maxGpusAdmitted": 1}])
    team_queue(kubectl, team_a, {"t4": 8, "a100-80gb": 8})
    team_queue(kubectl, team_b, {"t4": 8, "a100-80gb": 8})

    for name in ("first", "second", "third"):  # 8 t4 GPUs each: one at a time
        submit(kubectl, team_a, name)
        time.sleep(1.1)  # distinct creation times: Kueue orders by them (same priority)
    submit(kubectl, team_a, "big-card", gpuClass="a100-80gb")  # the other flavor's quota
    # team-b: yolofit's own maxGpusAdmitted (1) is off for a Kueue namespace.
    submit(kubectl, team_b, "other-team", queue=None)

    wait_for(running(kube, team_a, "first"), 90, what="first running")
    wait_for(running(kube, team_a, "big-card"), 90, what="big-card running on a100")
    wait_for(running(kube, team_b, "other-team"), 90, what="team-b's job running")
    st = wait_for(phase(kubectl, team_a, "second", "Queued", "insufficient unused quota"), 60,
                  what="second queued by Kueue")
    print(f"\nkubectl get ytj message: {st['message']}")
    for name in ("second", "third"):  # third: behind second, Kueue may not have tried it yet
        st = wait_for(phase(kubectl, team_a, name, "Queued", "Kueue"), 60,
                      what=f"{name} queued by Kueue")
        assert st["kueue"]["workload"] == kq.group_name(name, job(kubectl, team_a, name)[
            "metadata"]["uid"])
        assert conditions(st)["QuotaReserved"][0] == "False"
        pods = live_pods(kube, team_a, name)
        assert len(pods) == 2 and all(
            kq.KUEUE_GATE in [g.name for g in p.spec.scheduling_gates or []] for p in pods)

    st = status(kubectl, team_a, "first")
    # team-a's label is the tenant's: its jobs are held to yolofit's quota (the `*` rule's)
    # as well as Kueue's; team-b's rule is the platform's: Kueue's quota alone.
    assert st["phase"] == "Running" and st["admitted"] is True
    assert not status(kubectl, team_b, "other-team").get("admitted")
    assert st["kueue"]["admitted"] and st["kueue"]["flavor"] == "t4"
    assert st["kueue"]["clusterQueue"] == f"cq-{team_a}"
    assert conditions(st)["Admitted"] == ("True", "Admitted")
    pods = live_pods(kube, team_a, "first")
    assert all(p.spec.node_name.startswith("t4-") for p in pods)
    assert {p.metadata.labels[kq.GROUP_LABEL] for p in pods} == {st["kueue"]["workload"]}
    assert all(p.metadata.annotations[kq.TOTAL_COUNT] == "2" for p in pods)
    assert all(kq.GATED_BY not in (p.metadata.annotations or {}) for p in pods)
    assert status(kubectl, team_a, "big-card")["kueue"]["flavor"] == "a100-80gb"
    assert status(kubectl, team_b, "other-team")["kueue"]["queueName"] == "lq"

    finish(kube, team_a, "first")
    wait_for(phase(kubectl, team_a, "first", "Succeeded"), 60, what="first succeeded")
    wait_for(running(kube, team_a, "second"), 90, what="second admitted next")
    assert status(kubectl, team_a, "third")["phase"] == "Queued"  # in order, within quota
    finish(kube, team_a, "second")
    wait_for(running(kube, team_a, "third"), 90, what="third admitted last")


def test_higher_priority_preempts_and_the_preempted_gang_comes_back(
        operator: Any, kueue_policy: Callable[..., None], kubectl: Any, kube: Any,
        namespace: str) -> None:
    kueue_policy([])
    team_queue(kubectl, namespace, {"t4": 8})
    submit(kubectl, namespace, "low", priority="low")
    wait_for(running(kube, namespace, "low", attempt=0), 90, what="low running")

    submit(kubectl, namespace, "high", priority="high")
    st = wait_for(lambda: (s := status(kubectl, namespace, "low")).get(
        "attempt", 0) >= 1 and s or None, 90, what="low evicted -> attempt 1")
    assert st["kueue"]["restarts"] == st["attempt"]
    assert "Preempted" in st["kueue"]["lastEviction"]
    wait_for(running(kube, namespace, "high"), 90, what="high running")
    st = wait_for(phase(kubectl, namespace, "low", "Queued"), 60, what="low queued again")
    assert conditions(st)["Evicted"][0] == "True"
    assert conditions(st)["Preempted"] == ("True", "InClusterQueue")
    # The gang is back at the job's current attempt, gated, waiting for Kueue. (Under load
    # Kueue may re-admit the requeued Workload before `high` and preempt it once more: each
    # eviction is one more attempt, never pods of an older one.)
    def gang_of_current_attempt() -> Any:
        pods, attempt = live_pods(kube, namespace, "low"), status(kubectl, namespace, "low")[
            "attempt"]
        return len(pods) == 2 and all(
            p.metadata.labels["yolofit.io/attempt"] == str(attempt) for p in pods) and pods
    pods = wait_for(gang_of_current_attempt, 60, what="low's gang recreated")
    assert all(p.status.phase == "Pending" for p in pods)

    finish(kube, namespace, "high")
    st = wait_for(lambda: running(kube, namespace, "low")() and (
        s := status(kubectl, namespace, "low"))["phase"] == "Running" and s, 90,
        what="low running again")
    assert st["attempt"] >= 1 and st["kueue"]["restarts"] == st["attempt"]
    pods = live_pods(kube, namespace, "low")
    assert {p.metadata.labels["yolofit.io/attempt"] for p in pods} == {str(st["attempt"])}
    config = json.loads(next(e.value for e in pods[0].spec.containers[0].env
                             if e.name == "YOLOFIT_TRAIN_CONFIG"))
    assert config["attempt"] == st["attempt"]  # what the trainer resumes from


def test_plan_on_a_flavor_without_quota_waits_with_kueues_reason(
        operator: Any, kueue_policy: Callable[..., None], kubectl: Any, kube: Any,
        namespace: str) -> None:
    kueue_policy([])
    team_queue(kubectl, namespace, {"t4": 8, "a100-80gb": 8})
    submit(kubectl, namespace, "pinned", gpuClass="h100-80gb")
    st = wait_for(phase(kubectl, namespace, "pinned", "Queued", "flavor"), 60,
                  what="h100 job queued with Kueue's reason")
    assert st["message"].startswith("Kueue (LocalQueue lq): "), st["message"]
    print(f"\nkubectl get ytj message: {st['message']}")
    assert st["plan"]["gpuClass"] == "h100-80gb"
    assert conditions(st)["QuotaReserved"] == ("False", "Pending")
    out = kubectl("get", "ytj", "-n", namespace, "pinned").stdout
    assert "Queued" in out
    pods = live_pods(kube, namespace, "pinned")
    assert len(pods) == 2 and all(p.status.phase == "Pending" and not p.spec.node_name
                                  for p in pods)


def test_a_mig_slice_job_is_admitted_under_the_queues_yolofit_renders(
        operator: Any, policy: Callable[..., None], kueue_running: Any, kubectl: Any,
        kube: Any, namespace: str) -> None:
    """The pod of a job on a MIG class requests `nvidia.com/mig-1g.10gb`, not a GPU; the
    ClusterQueue rendered from the policy (kueue_objects over the sandbox's nodes, as
    `yolofit kueue queues` does) covers it, so Kueue admits the job on the slice's flavor
    (a queue covering only nvidia.com/gpu leaves it inadmissible forever)."""
    mig = {"name": "a100-mig-1g", "migProfile": "1g.10gb", "tolerations": TOL,
           "nodeSelector": {**A100, "nvidia.com/mig.config": "all-1g.10gb"}}
    rules = [{"namespace": namespace, "kueueQueue": "slices", "maxGpusAdmitted": 2}]
    policy(rules, classes=[*CLASSES, mig], preference=["t4", "a100-80gb", "h100-80gb"])
    spec = GPUCapacityPolicySpec.model_validate({"classes": [*CLASSES, mig],
                                                 "namespaces": rules})
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    objs = [*kueue_objects.flavors(spec),
            *kueue_objects.queues(spec, fleet_capacity(spec, nodes))]
    cq = next(o for o in objs if o["kind"] == "ClusterQueue")
    assert "nvidia.com/mig-1g.10gb" in cq["spec"]["resourceGroups"][0]["coveredResources"]
    kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(o)
                                                                       for o in objs))
    CLUSTER_QUEUES.append(cq["metadata"]["name"])
    submit(kubectl, namespace, "slice", nodes=1, per_node=1, queue=None,
           gpuClass="a100-mig-1g")  # Kueue-managed by the namespace rule's kueueQueue
    (pod,) = wait_for(running(kube, namespace, "slice", n=1), 90, what="slice job running")
    requests = pod.spec.containers[0].resources.requests
    assert requests.get("nvidia.com/mig-1g.10gb") == "1" and "nvidia.com/gpu" not in requests
    node = kube.read_node(pod.spec.node_name)
    assert node.metadata.labels.get("nvidia.com/mig.config") == "all-1g.10gb"
    st = status(kubectl, namespace, "slice")
    assert conditions(st)["Admitted"][0] == "True", st
    assert st["plan"]["gpuClass"] == "a100-mig-1g"


def test_failed_job_releases_kueue_quota(operator: Any, kueue_policy: Callable[..., None],
                                         kubectl: Any, kube: Any, namespace: str) -> None:
    kueue_policy([])
    team_queue(kubectl, namespace, {"t4": 8})
    submit(kubectl, namespace, "breaks")
    submit(kubectl, namespace, "waits")
    wait_for(running(kube, namespace, "breaks"), 90, what="breaks running")
    pod = live_pods(kube, namespace, "breaks")[1]
    finish_pod(kube, namespace, pod.metadata.name, 1, message="boom")
    wait_for(phase(kubectl, namespace, "breaks", "Failed"), 60, what="breaks failed")
    wait_for(running(kube, namespace, "waits"), 90, what="quota freed for the next job")


def test_admission_latency_with_and_without_kueue(
        operator: Any, kueue_policy: Callable[..., None], kubectl: Any, kube: Any,
        namespace: str) -> None:
    """Apply -> all pods Running, one 2-pod job at a time (printed, not asserted)."""
    kueue_policy([])
    team_queue(kubectl, namespace, {"t4": 16})
    times: dict[str, list[float]] = {"kueue": [], "yolofit": []}
    for i in range(4):
        for mode in ("kueue", "yolofit"):
            name = f"lat-{mode}-{i}"
            t0 = time.monotonic()
            submit(kubectl, namespace, name, queue="lq" if mode == "kueue" else None)
            wait_for(running(kube, namespace, name), 90, interval=0.05, what=name)
            times[mode].append(time.monotonic() - t0)
            finish(kube, namespace, name)
            wait_for(phase(kubectl, namespace, name, "Succeeded"), 60, what=f"{name} done")
    print("\nadmission latency (apply -> 2 pods Running), median/max s: " + ", ".join(
        f"{m}: {statistics.median(v):.2f}/{max(v):.2f}" for m, v in times.items()))

