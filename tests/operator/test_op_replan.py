"""Re-plans for what the pods measured (replan.py, replan_actions.py): denser data than the
plan assumed (`data-denser`, exit 3, `objects_per_image`) or a bigger checkpoint
(`model-differs`, exit 4, `model_found`). Parsing from the trainer's own encoder and from
synthetic dicts; the pure decision; the reconciler against a recording apiserver
(faultharness.py): re-planned once, no margin learned, no OOM or restart spent, and
failed with the figure when nothing fits."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from faultharness import (
    JOB,
    KEY,
    NS,
    T4,
    Harness,
    config_of,
    end_pod,
    kill_and_restart,
    live_pods,
    run_pods,
    running_job,
)
from opfixtures import make_profiles, summary

from yolofit.operator import feedback, kube, replan
from yolofit.operator.api import (
    GPUCapacityPolicySpec,
    MeasuredInputs,
    ModelFound,
    Plan,
    YOLOTrainingJobSpec,
)
from yolofit.operator.fleet import FleetNode
from yolofit.operator.state import World
from yolofit.trainer.summary import Summary

GiB, MiB = 2**30, 2**20
MARGINS_CM = kube.configmap_path("yolofit-system", "yolofit-learned-margins")


def denser(rank: int, objects: int) -> str:
    """A data-denser summary, written by the trainer's own encoder (the contract)."""
    return Summary(rank=rank, exit_reason="data-denser", objects_per_image=objects,
                   message=f"the densest training image holds {objects} objects").to_json()


def differs(rank: int, model: str, nc: int, **extra: Any) -> str:
    """A model-differs summary as the trainer half being written in parallel will send it:
    `exit_reason` "model-differs" (exit 4) and `model_found` {"model", "nc"}."""
    data = {"rank": rank, "memory_kind": "host-rss", "exit_reason": "model-differs",
            "message": f"checkpoint is {model} with {nc} classes", "attempt": 0,
            "model_found": {"model": model, "nc": nc},
            "ranks": [[rank, 0, 0, 0, 0, 4]], **extra}
    return json.dumps(data)


# --- parsing -------------------------------------------------------------------------------

def test_data_denser_summary_parses_with_its_figure() -> None:
    report = feedback.parse_summary(denser(1, 412), 1, "p")
    assert report is not None and not report.rejected
    assert report.exit_reason == "data-denser" and report.objects_per_image == 412
    assert report.model_found is None
    assert [r.exit_reason for r in report.ranks] == ["data-denser"]  # exit code 3


def test_model_differs_summary_parses_from_a_synthetic_dict() -> None:
    report = feedback.parse_summary(differs(0, "yolo11l", 80), 0, "p")
    assert report is not None and not report.rejected
    assert report.model_found == ModelFound(model="yolo11l", nc=80)
    assert report.objects_per_image is None
    assert [r.exit_reason for r in report.ranks] == ["model-differs"]  # exit code 4


@pytest.mark.parametrize(("extra", "why"), [
    ({"model_found": {"model": "../../etc/passwd", "nc": 80}}, "model_found.model"),
    ({"model_found": {"model": "yolo11l", "nc": 0}}, "model_found.nc"),
    ({"model_found": {"model": "yolo11l", "nc": 1e999}}, "Infinity is not a number"),
    ({"model_found": "yolo11l"}, "model_found is not an object"),
    ({"objects_per_image": -4}, "objects_per_image"),
    ({"objects_per_image": 0}, "objects_per_image"),
    ({"objects_per_image": "many"}, "objects_per_image"),
])
def test_malformed_findings_reject_the_report(extra: dict[str, Any], why: str) -> None:
    report = feedback.parse_summary(differs(0, "yolo11l", 80, **extra), 0, "p")
    assert report is not None and why in report.rejected


@pytest.mark.parametrize("message", [
    json.dumps({"rank": 0, "exit_reason": "gpu-fell-off-the-bus", "ranks": [[0, 1, 2, 3, 4,
                                                                             7]]}),
    json.dumps({"rank": 0, "exit_reason": "model-differs"}),  # no model_found
    json.dumps({"rank": 0, "exit_reason": "data-denser", "objects_per_image": None}),
    summary(0, GiB),  # an older trainer: neither field
])
def test_unknown_reasons_and_absent_fields_parse(message: str) -> None:
    report = feedback.parse_summary(message, 0, "p")
    assert report is not None and not report.rejected
    assert report.objects_per_image is None and report.model_found is None


# --- the pure decision ---------------------------------------------------------------------

PLAN = Plan(gpu_class="t4", nodes=2, gpus_per_node=1, gpus=2, batch_per_gpu=17, accumulate=2,
            amp="fp16", imgsz=640, objects_per_image=100)
SPEC = YOLOTrainingJobSpec(model="yolov8n", data="/d.yaml", gpus={"nodes": 2, "perNode": 1})
POLICY = GPUCapacityPolicySpec()
BEFORE = replan.Assumed(objects=100, model="yolov8n", classes=80)


def report(pod: str, reason: str, objects: int | None = None,
           model: ModelFound | None = None) -> feedback.PodReport:
    return feedback.PodReport(pod=pod, exit_reason=reason, objects_per_image=objects,
                              model_found=model)


def fleet(tmp_path: Path, **profiles: int) -> replan.Fleet:
    """The t4 fleet; yolov8n as the shared profiles, plus bigger `model=nc` profiles."""
    store = make_profiles(tmp_path, "yolov8n", per_object_bytes=MiB)
    for model, nc in profiles.items():
        make_profiles(tmp_path, model, nc=nc, per_sample_mib=400, per_object_bytes=MiB)
    store = type(store)(tmp_path, shipped=None)  # reread with every model written
    world = World(store=store)
    world.set_nodes([FleetNode(f"t4-{i}", T4, 4) for i in range(2)])
    return replan.Fleet(world.policy, world.classes, store, {})


def test_assumed_reads_the_plan_then_spec_then_policy() -> None:
    assert replan.assumed(SPEC, POLICY, PLAN, None) == BEFORE
    old = PLAN.model_copy(update={"objects_per_image": 0})  # a plan from before the field
    spec = SPEC.model_copy(update={"max_objects_per_image": 30})
    assert replan.assumed(spec, POLICY, old, None).objects == 30
    assert replan.assumed(SPEC, POLICY, old, None).objects == POLICY.default_objects_per_image
    inputs = MeasuredInputs(objects_per_image=412, model="yolo11l", classes=3)
    assert replan.assumed(SPEC, POLICY, old, inputs) == replan.Assumed(412, "yolo11l", 3)


@pytest.mark.parametrize(("reports", "recorded", "objects", "source"), [
    ([report("a", "data-denser", 412)], None, 412, "a"),
    ([report("b", "data-denser", 300), report("a", "data-denser", 412)], None, 412, "a"),
    ([report("a", "data-denser", 250)], MeasuredInputs(objects_per_image=200), 250, "a"),
    # never lowered: a later, smaller report (over the plan) keeps what was recorded
    ([report("a", "data-denser", 150)], MeasuredInputs(objects_per_image=412), 412, "a"),
])
def test_found_keeps_the_densest_figure(reports: list[feedback.PodReport],
                                        recorded: MeasuredInputs | None, objects: int,
                                        source: str) -> None:
    got = replan.found(reports, BEFORE, recorded, 3, "T")
    assert got is not None
    assert (got.objects_per_image, got.source, got.attempt, got.time) == (objects, source, 3,
                                                                           "T")


@pytest.mark.parametrize("reports", [
    [],
    [report("a", "data-denser", 100)],  # no more than the plan assumed
    [report("a", "oom", 412)],  # the figure counts only with its exit reason
    [report("a", "data-denser", None)],
    [report("a", "model-differs", model=ModelFound(model="yolov8n", nc=80))],  # the same
    [report("a", "completed", model=ModelFound(model="yolo11l", nc=80))],
])
def test_found_nothing_new(reports: list[feedback.PodReport]) -> None:
    assert replan.found(reports, BEFORE, None, 0, "T") is None


def test_planning_spec_measured_inputs_win_but_never_lower() -> None:
    inputs = MeasuredInputs(objects_per_image=412, model="yolo11l", classes=3)
    eff = replan.planning_spec(SPEC, inputs)
    assert (eff.max_objects_per_image, eff.model, eff.classes) == (412, "yolo11l", 3)
    spec = SPEC.model_copy(update={"max_objects_per_image": 500})
    assert replan.planning_spec(spec, inputs).max_objects_per_image == 500
    assert replan.planning_spec(SPEC, None) is SPEC


def test_decide_replans_with_the_measured_density(tmp_path: Path) -> None:
    inputs = MeasuredInputs(objects_per_image=412, source="a", attempt=0)
    d = replan.decide("j", "ns", SPEC, fleet(tmp_path), PLAN, BEFORE, inputs)
    assert d.action == "replan" and d.cause == "DataDenser" and d.plan is not None
    assert d.plan.objects_per_image == 412 and d.plan.batch_per_gpu < PLAN.batch_per_gpu
    assert d.message == (f"data denser than planned: 412 objects/image measured, plan assumed "
                         f"100; batch 17 -> {d.plan.batch_per_gpu} per GPU, accumulate 2 -> "
                         f"{d.plan.accumulate}")


def test_decide_fails_with_the_figure_and_what_would_fit(tmp_path: Path) -> None:
    f = fleet(tmp_path)
    d = replan.decide("j", "ns", SPEC, f, PLAN, BEFORE, MeasuredInputs(objects_per_image=5000))
    assert d.action == "fail" and d.plan is None and d.cause == "DataDenser"
    assert d.message.startswith("data denser than planned: 5000 objects/image measured, plan "
                                "assumed 100; spec: does not fit")
    most = int(d.message.split("at most ")[1].split(" ")[0])
    assert 412 < most < 5000  # and it is the boundary:
    at = SPEC.model_copy(update={"max_objects_per_image": most})
    from yolofit.operator import admission
    assert admission.decide("j", "ns", at, f.policy, f.classes, f.store).plan is not None
    over = at.model_copy(update={"max_objects_per_image": most + 1})
    assert admission.decide("j", "ns", over, f.policy, f.classes, f.store).plan is None


def test_decide_replans_for_the_model_the_checkpoint_is(tmp_path: Path) -> None:
    rep = feedback.parse_summary(differs(0, "yolov8s", 3), 0, "j-worker-0")
    assert rep is not None
    inputs = replan.found([rep], BEFORE, None, 0, "T")
    assert inputs is not None and (inputs.model, inputs.classes) == ("yolov8s", 3)
    d = replan.decide("j", "ns", SPEC, fleet(tmp_path, yolov8s=3), PLAN, BEFORE, inputs)
    assert d.action == "replan" and d.cause == "ModelDiffers" and d.plan is not None
    assert d.plan.profile.startswith("yolov8s|") and "|nc3|" in d.plan.profile
    assert d.plan.batch_per_gpu < PLAN.batch_per_gpu  # a bigger model: a smaller batch
    assert d.message.startswith("checkpoint differs from the plan: yolov8s with 3 classes "
                                "found, plan assumed yolov8n with 80 classes; batch 17 -> ")


def test_decide_traces_a_model_it_has_no_profile_for(tmp_path: Path) -> None:
    inputs = MeasuredInputs(model="yolov8m", classes=80)
    d = replan.decide("j", "ns", SPEC, fleet(tmp_path), PLAN, BEFORE, inputs)
    assert d.action == "profile" and d.missing is not None and d.missing.model == "yolov8m"


# --- the reconciler ------------------------------------------------------------------------

class DenseHarness(Harness):
    """Harness whose profiles charge 1 MiB per object per sample, so density moves the
    batch (the shared synthetic profiles charge 1 KiB)."""

    def restart(self) -> None:
        super().restart()
        self.world.store = make_profiles(self.store_dir / "dense", per_object_bytes=MiB)


def reported(tmp_path: Path, pod: str, code: int, message: str) -> Harness:
    """A running job (DenseHarness) after one pass that saw `pod` end with `code` and the
    summary `message`."""
    h = DenseHarness(tmp_path)
    running_job(h)
    end_pod(h.api, pod, code, message)
    h.reconcile()
    return h


def test_data_denser_replans_once_without_learning_or_spending_budgets(tmp_path: Path) -> None:
    h = DenseHarness(tmp_path)
    before = running_job(h)
    assert before["objectsPerImage"] == 100 and before["batchPerGpu"] == 17
    end_pod(h.api, "j-worker-1", 3, denser(1, 412))
    h.reconcile()
    h.reconcile()  # the same summaries again: no second re-plan
    st = h.status
    assert st["attempt"] == 1 and st["phase"] == "Admitted"
    assert st["measuredInputs"] == {"objectsPerImage": 412, "source": "j-worker-1",
                                    "attempt": 0, "time": st["measuredInputs"]["time"]}
    (entry,) = st["replans"]
    after = st["plan"]
    assert entry["cause"] == "DataDenser" and entry["attempt"] == 1
    assert (entry["fromBatchPerGpu"], entry["toBatchPerGpu"]) == (17, after["batchPerGpu"])
    assert after["objectsPerImage"] == 412 and after["batchPerGpu"] < 17
    assert "412 objects/image measured, plan assumed 100" in entry["reason"]
    assert st.get("restarts", []) == []  # not the failure policy's budget
    assert h.world.margins == {} and MARGINS_CM not in h.api.objects  # no margin learned
    replanned = [(t, m) for t, r, m in h.events if r == "Replanned"]
    assert replanned == [("Normal", f"data denser than planned: 412 objects/image measured, "
                          f"plan assumed 100; batch 17 -> {after['batchPerGpu']} per GPU, "
                          f"accumulate 2 -> {after['accumulate']}")]
    assert "OutOfMemoryReplan" not in h.reasons()
    h.settle(3)  # the new attempt launches with the new plan and figure
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    for p in pods.values():
        assert p["metadata"]["labels"]["yolofit.io/attempt"] == "1"
        cfg = config_of(p)
        assert (cfg["batch_per_gpu"], cfg["objects_per_image"]) == (after["batchPerGpu"], 412)
    assert len(h.status["replans"]) == 1


def test_an_oom_after_a_data_replan_keeps_the_density_and_its_own_budget(
        tmp_path: Path) -> None:
    from yolofit.operator import metrics

    def replans(cause: str) -> float:
        return metrics.REGISTRY.get_sample_value(
            "yolofit_replans_total", {"gpu_class": "t4", "namespace": "ns", "cause": cause}) or 0

    counted = {c: replans(c) for c in ("DataDenser", "OutOfMemory")}
    h = DenseHarness(tmp_path)
    h.world.set_policy(h.world.policy.model_copy(update={"max_replans": 1}))
    running_job(h)
    end_pod(h.api, "j-worker-0", 3, denser(0, 412))
    h.settle(3)
    run_pods(h.api)
    h.sync()
    h.reconcile()
    end_pod(h.api, "j-worker-1", 88, summary(1, 15 * GiB, "oom", "CUDA out of memory"))
    h.reconcile()
    st = h.status
    assert [r["cause"] for r in st["replans"]] == ["DataDenser", "OutOfMemory"]
    assert st["phase"] != "Failed" and st["attempt"] == 2  # the data re-plan is no OOM
    assert st["plan"]["objectsPerImage"] == 412  # never planned below the measured figure
    assert h.world.margins["ns|yolov8n|t4"]["seen"] == ["job-uid/1"]
    assert {c: replans(c) - n for c, n in counted.items()} == {"DataDenser": 1,
                                                               "OutOfMemory": 1}


def test_nothing_fits_the_measured_density_fails_and_frees_everything(tmp_path: Path) -> None:
    h = reported(tmp_path, "j-worker-1", 3, denser(1, 5000))
    st = h.status
    assert st["phase"] == "Failed" and st["attempt"] == 0 and st.get("replans", []) == []
    assert "5000 objects/image measured, plan assumed 100" in st["message"]
    assert "at most " in st["message"] and "objects/image fit" in st["message"]
    assert st["measuredInputs"]["objectsPerImage"] == 5000
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DataDenser"
    assert live_pods(h.api) == {}  # rank 0 no longer holds its GPU
    assert h.world.reserved == {} and h.world.admitted_gpus(NS) == 0
    assert ("Warning", "DataDenser") in [(t, r) for t, r, _ in h.events]


def test_a_figure_the_plan_already_assumed_fails_as_the_trainer_said(tmp_path: Path) -> None:
    """No loop: a report that says nothing new is not re-planned again."""
    h = reported(tmp_path, "j-worker-0", 3, denser(0, 100))
    st = h.status
    assert st["phase"] == "Failed" and st.get("replans", []) == []
    assert next(c for c in st["conditions"] if c["type"] == "Failed")["reason"] == "DataDenser"
    assert KEY not in h.world.reserved.values()


def test_model_differs_without_a_profile_traces_it_then_runs(tmp_path: Path) -> None:
    h = DenseHarness(tmp_path)
    running_job(h)
    h.api.objects[JOB]["spec"].update(  # fine-tuning from the tenant's own checkpoint
        weights="/data/runs/best.pt", volumeMounts=[{"name": "data", "mountPath": "/data"}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    end_pod(h.api, "j-worker-0", 4, differs(0, "yolov8s", 3))
    h.reconcile()
    st = h.status
    assert st["attempt"] == 1 and st.get("plan") is None, st
    assert st["measuredInputs"]["model"] == "yolov8s" and st["measuredInputs"]["classes"] == 3
    assert "tracing yolov8s" in st["message"]
    h.reconcile()
    assert h.status["phase"] == "Profiling" and h.api.pods(NS) == {}
    assert "Profiling" in h.reasons() and "Replanned" in h.reasons()
    make_profiles(h.store_dir / "dense", "yolov8s", nc=3, per_sample_mib=400,
                  per_object_bytes=MiB)  # the tracer's result
    h.world.store = type(h.world.store)(h.store_dir / "dense", shipped=None)
    h.settle(3)
    st = h.status
    assert st["plan"]["profile"].startswith("yolov8s|") and st["attempt"] == 1
    assert sorted(h.api.pods(NS)) == ["j-worker-0", "j-worker-1"]
    assert all(p["metadata"]["labels"]["yolofit.io/attempt"] == "1"
               for p in h.api.pods(NS).values())
    assert st.get("replans", []) == [] and h.world.margins == {}
    # The pods train what the plan is for (the pre-flight then finds the checkpoint equal),
    # from the job's own checkpoint.
    config = config_of(h.api.pods(NS)["j-worker-0"])
    assert (config["model"], config["classes"]) == ("yolov8s.yaml", 3)
    assert config["weights"] == "/data/runs/best.pt"


# --- crash safety: a kill -9 after any request of the re-plan -------------------------------

def denser_scenario(h: Harness) -> int:
    running_job(h)
    end_pod(h.api, "j-worker-1", 3, denser(1, 412))
    return len(h.api.requests)


def test_the_kill_matrix_covers_every_request_of_the_replan(tmp_path: Path) -> None:
    h = DenseHarness(tmp_path)
    start = denser_scenario(h)
    h.settle(6)
    assert 0 < len(h.api.requests) - start < 16


@pytest.mark.parametrize("n", range(1, 16))
def test_kill_9_after_each_request_of_the_replan(tmp_path: Path, n: int) -> None:
    """Written before the old pods go: a restarted operator finds the new attempt, deletes
    the old pods as stale and launches the new plan - never the old one, never twice."""
    h = DenseHarness(tmp_path)
    st = kill_and_restart(h, denser_scenario(h) + n).status
    assert st["attempt"] == 1 and [r["cause"] for r in st["replans"]] == ["DataDenser"], st
    assert st["measuredInputs"]["objectsPerImage"] == 412
    pods = h.api.pods(NS)
    assert sorted(pods) == ["j-worker-0", "j-worker-1"]
    for p in pods.values():
        assert p["metadata"]["labels"]["yolofit.io/attempt"] == "1"
        assert config_of(p)["batch_per_gpu"] == st["plan"]["batchPerGpu"] < 17
    assert h.world.margins == {} and MARGINS_CM not in h.api.objects


# --- the webhooks plan a requeued job as the operator does -------------------------------

@pytest.mark.parametrize(("measured", "objects"), [
    ({"objectsPerImage": 412, "source": "j-worker-1", "attempt": 0}, 412),
    ({"objectsPerImage": "lots"}, 100),  # not ours to trust: the policy default
    (None, 100),
])
def test_webhook_plan_of_a_not_admitted_job_uses_the_measured_inputs(
        tmp_path: Path, measured: dict[str, Any] | None, objects: int) -> None:
    from yolofit.operator.webhooks import Snapshot, desired_plan

    f = fleet(tmp_path)
    snap = Snapshot(policy=f.policy, classes=dict(f.classes), store=f.store)
    obj = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
           "metadata": {"name": "j", "namespace": "ns"},
           "spec": {"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 2, "perNode": 1}},
           "status": {"admitted": False, "measuredInputs": measured}}
    plan = desired_plan(snap, obj, copy.deepcopy(obj))
    assert plan is not None and plan["objectsPerImage"] == objects
