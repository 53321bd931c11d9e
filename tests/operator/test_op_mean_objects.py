"""The typical image's label density in every plan the cluster makes: spec.meanObjectsPerImage
and the policy's defaultMeanObjectsPerImage (api.py), the planner input (admission.py), the
plan's record and the trainer config (launch.py), the summary's `objects_per_image_mean`
through the operator's parser (feedback.py), and the re-plan when the pods measured a denser
mean than the plan assumed (replan.py, replan_actions.py) - once, and never lowering a
recorded figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultharness import NS, T4, Harness, config_of, end_pod, running_job
from opfixtures import make_profiles
from pydantic import ValidationError

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, feedback, launch, replan, webhooks
from yolofit.operator.api import (
    GPUCapacityPolicySpec,
    MeasuredInputs,
    Plan,
    YOLOTrainingJobSpec,
)
from yolofit.operator.fleet import FleetNode
from yolofit.operator.state import World
from yolofit.trainer.summary import Summary

MiB = 2**20
POLICY = GPUCapacityPolicySpec()
SEG = YOLOTrainingJobSpec(model="yolo11s-seg", data="/d.yaml")


def seg(**update: object) -> YOLOTrainingJobSpec:
    return SEG.model_copy(update=update)


def t4_world(store: ProfileStore) -> World:
    world = World(store=store)
    world.set_nodes([FleetNode(f"t4-{i}", T4, 4) for i in range(2)])
    return world


@pytest.fixture(scope="module")
def shipped() -> World:
    """The shipped profiles (yolo11s-seg and yolov8n traced from the real models) on T4s."""
    return t4_world(ProfileStore())


def decide(world: World, spec: YOLOTrainingJobSpec) -> admission.Decision:
    return admission.decide("j", "ns", spec, world.policy, world.classes, world.store)


# --- API ----------------------------------------------------------------------------------

def test_policy_default_is_documented_and_bounded() -> None:
    assert POLICY.default_mean_objects_per_image == 16 <= POLICY.default_objects_per_image
    field = GPUCapacityPolicySpec.model_fields["default_mean_objects_per_image"]
    assert "COCO" in (field.description or "")
    with pytest.raises(ValidationError, match="default_mean_objects_per_image|defaultMean"):
        GPUCapacityPolicySpec.model_validate({"defaultMeanObjectsPerImage": 0})


@pytest.mark.parametrize("value", [0, -1, 10001, "many"])
def test_spec_mean_out_of_range_is_refused_by_the_schema(value: object) -> None:
    with pytest.raises(ValidationError):
        YOLOTrainingJobSpec.model_validate({"model": "yolo11s-seg", "data": "/d.yaml",
                                            "meanObjectsPerImage": value})


def test_a_mean_above_the_max_is_one_line_naming_the_field(shipped: World) -> None:
    d = decide(shipped, seg(max_objects_per_image=30, mean_objects_per_image=40))
    assert d.refused and d.plan is None
    (line,) = d.errors
    assert line.startswith("spec.meanObjectsPerImage: 40 exceeds spec.maxObjectsPerImage 30")
    assert "\n" not in line and "yolofit data stats" in line
    assert decide(shipped, seg(max_objects_per_image=30, mean_objects_per_image=30)).plan


def test_the_webhook_refuses_it_as_the_operator_does(shipped: World) -> None:
    snap = webhooks.Snapshot(shipped.policy, shipped.classes, shipped.store)
    obj = {"metadata": {"name": "j", "namespace": "ns"},
           "spec": {"model": "yolo11s-seg", "data": "/d.yaml", "maxObjectsPerImage": 30,
                    "meanObjectsPerImage": 40}}
    with pytest.raises(webhooks.Refused, match=r"^spec\.meanObjectsPerImage: 40 exceeds"):
        webhooks.validate_job(snap, {"object": obj})
    assert webhooks.mutate_job(snap, {"object": obj}) == []  # no plan to write


# --- the planner input --------------------------------------------------------------------

@pytest.mark.parametrize(("update", "densest", "mean"), [
    ({}, 100, 16),                                                  # both policy defaults
    ({"max_objects_per_image": 5}, 5, 5),                           # default capped at max
    ({"mean_objects_per_image": 7}, 100, 7),                        # spec mean wins
    ({"max_objects_per_image": 50, "mean_objects_per_image": 9}, 50, 9),
    ({"mean_objects_per_image": 150}, 150, 150),                    # densest >= the mean
])
def test_plan_request_carries_the_mean(update: dict[str, int], densest: int,
                                       mean: int) -> None:
    req = admission.plan_request(seg(**update), POLICY)
    assert (req.objects, req.mean_objects) == (densest, mean)


def test_policy_default_mean_is_the_policy_s(shipped: World) -> None:
    policy = POLICY.model_copy(update={"default_mean_objects_per_image": 40})
    assert admission.plan_request(SEG, policy).mean_objects == 40


def test_a_segment_plan_records_its_mean_and_gains_from_it(shipped: World) -> None:
    typical = decide(shipped, SEG).plan
    every = decide(shipped, seg(mean_objects_per_image=100)).plan  # the old bound
    assert typical is not None and every is not None
    assert (typical.objects_per_image, typical.mean_objects_per_image) == (100, 16)
    assert (every.objects_per_image, every.mean_objects_per_image) == (100, 100)
    assert typical.batch_per_gpu > 1.5 * every.batch_per_gpu  # masks at 16/image, not 100
    cfg = launch.train_config("j", "ns", SEG, typical, 0)
    assert (cfg["objects_per_image"], cfg["mean_objects_per_image"]) == (100, 16)


def test_a_plan_that_does_not_depend_on_the_mean_records_none(shipped: World) -> None:
    """Detection profiles count every label at the densest: the mean moves nothing, so the
    plan assumes none and the trainer does not check it (no needless re-plan)."""
    spec = YOLOTrainingJobSpec(model="yolov8n", data="/d.yaml", mean_objects_per_image=3)
    plan = decide(shipped, spec).plan
    assert plan is not None and plan.mean_objects_per_image == 0
    dense = decide(shipped, spec.model_copy(update={"mean_objects_per_image": 90})).plan
    assert dense is not None and dense.batch_per_gpu == plan.batch_per_gpu
    assert launch.train_config("j", "ns", spec, plan, 0)["mean_objects_per_image"] is None


# --- the summary and the operator's parser ---------------------------------------------------

def test_summary_mean_round_trips_through_the_parser() -> None:
    s = Summary(rank=1, exit_reason="data-denser", objects_per_image=60,
                objects_per_image_mean=31, message="mean 30.2")
    report = feedback.parse_summary(s.to_json(), 1, "j-worker-1")
    assert report is not None and not report.rejected
    assert (report.objects_per_image, report.objects_per_image_mean) == (60, 31)
    plain = feedback.parse_summary(Summary(rank=0).to_json(), 0, "p")
    assert plain is not None and plain.objects_per_image_mean is None


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1_000_000, True), (-1, False),
                                           (1_000_001, False), ("x", False),
                                           (float("inf"), False)])
def test_parser_bounds_the_mean(value: object, ok: bool) -> None:
    text = json.dumps({"rank": 0, "exit_reason": "data-denser", "objects_per_image": 3,
                       "objects_per_image_mean": value})
    report = feedback.parse_summary(text, 0, "p")
    assert report is not None
    assert (not report.rejected) == ok, report.rejected
    if not ok:
        assert "objects_per_image_mean" in report.rejected or "number" in report.rejected


# --- the re-plan ----------------------------------------------------------------------------

BEFORE = replan.Assumed(objects=100, model="yolo11s-seg", classes=80, mean=16)


def report(pod: str, objects: int, mean: int | None,
           reason: str = "data-denser") -> feedback.PodReport:
    return feedback.PodReport(pod=pod, exit_reason=reason, objects_per_image=objects,
                              objects_per_image_mean=mean)


def test_assumed_reads_the_plan_s_mean() -> None:
    plan = Plan(gpu_class="t4", nodes=1, gpus_per_node=1, gpus=1, batch_per_gpu=21,
                accumulate=3, amp="fp16", imgsz=640, objects_per_image=100,
                mean_objects_per_image=16)
    assert replan.assumed(SEG, POLICY, plan, None) == BEFORE
    old = plan.model_copy(update={"mean_objects_per_image": 0})  # before the field
    assert replan.assumed(SEG, POLICY, old, None).mean == 0


def test_found_records_a_denser_mean() -> None:
    got = replan.found([report("b", 60, 25), report("a", 70, 31)], BEFORE, None, 2, "T")
    assert got is not None
    assert (got.mean_objects_per_image, got.objects_per_image, got.source) == (31, None, "a")
    assert replan.causes(BEFORE, got) == ["DataDenser"]
    assert replan.describe(BEFORE, got) == ("data denser than planned: 31 objects/image on "
                                            "average measured, plan assumed 16")


@pytest.mark.parametrize(("reports", "before"), [
    ([report("a", 60, 16)], BEFORE),                                    # nothing new
    ([report("a", 60, 12)], BEFORE),                                    # sparser
    ([report("a", 60, 40)], replan.Assumed(100, "yolo11s-seg", 80, 0)),  # no mean assumed
    ([report("a", 60, 40, reason="error")], BEFORE),                    # not data-denser
])
def test_found_does_not_loop_when_nothing_new_was_measured(
        reports: list[feedback.PodReport], before: replan.Assumed) -> None:
    assert replan.found(reports, before, None, 1, "T") is None


def test_found_never_lowers_a_recorded_mean() -> None:
    recorded = MeasuredInputs(objects_per_image=300, mean_objects_per_image=40)
    got = replan.found([report("a", 400, 20)], BEFORE, recorded, 3, "T")  # denser max
    assert got is not None and (got.objects_per_image, got.mean_objects_per_image) == (400, 40)
    lower = replan.found([report("a", 120, 9)], BEFORE, None, 3, "T")  # max only: mean kept
    assert lower is not None and lower.mean_objects_per_image == 9


def test_planning_spec_applies_the_measured_mean() -> None:
    eff = replan.planning_spec(SEG, MeasuredInputs(mean_objects_per_image=31))
    assert (eff.mean_objects_per_image, eff.max_objects_per_image) == (31, None)
    spec = seg(mean_objects_per_image=50)  # an explicit, larger mean stays
    assert replan.planning_spec(spec, MeasuredInputs(mean_objects_per_image=31)
                                ).mean_objects_per_image == 50
    capped = seg(max_objects_per_image=20)  # the densest never below the mean
    eff = replan.planning_spec(capped, MeasuredInputs(mean_objects_per_image=31))
    assert (eff.mean_objects_per_image, eff.max_objects_per_image) == (31, 31)


def test_decide_replans_with_the_measured_mean(shipped: World) -> None:
    first = decide(shipped, SEG).plan
    assert first is not None
    fleet = replan.Fleet(shipped.policy, shipped.classes, shipped.store, {})
    inputs = MeasuredInputs(mean_objects_per_image=48, source="a")
    d = replan.decide("j", "ns", SEG, fleet, first, BEFORE, inputs)
    assert d.action == "replan" and d.cause == "DataDenser" and d.plan is not None
    assert (d.plan.objects_per_image, d.plan.mean_objects_per_image) == (100, 48)
    assert d.plan.batch_per_gpu < first.batch_per_gpu
    assert d.message.startswith("data denser than planned: 48 objects/image on average "
                                f"measured, plan assumed 16; batch {first.batch_per_gpu} -> ")


# --- the reconciler -------------------------------------------------------------------------

class MeanHarness(Harness):
    """Harness whose profiles charge 4 MiB per typical label of a sample (as mask maps do)."""

    def restart(self) -> None:
        super().restart()
        self.world.store = make_profiles(self.store_dir / "mean", per_mean_object_bytes=4 * MiB)


def test_a_denser_mean_replans_once_and_reaches_the_pods(tmp_path: Path) -> None:
    h = MeanHarness(tmp_path)
    before = running_job(h)
    assert (before["objectsPerImage"], before["meanObjectsPerImage"]) == (100, 16)
    for pod in h.api.pods(NS).values():
        assert config_of(pod)["mean_objects_per_image"] == 16
    text = Summary(rank=1, exit_reason="data-denser", objects_per_image=60,
                   objects_per_image_mean=40, message="mean 39.5").to_json()
    end_pod(h.api, "j-worker-1", 3, text)
    h.reconcile()
    h.reconcile()  # the same summary again: no second re-plan
    st = h.status
    assert st["attempt"] == 1 and len(st["replans"]) == 1
    assert st["measuredInputs"]["meanObjectsPerImage"] == 40
    assert "objectsPerImage" not in st["measuredInputs"]  # 60 is under the plan's 100
    after = st["plan"]
    assert (after["objectsPerImage"], after["meanObjectsPerImage"]) == (100, 40)
    assert after["batchPerGpu"] < before["batchPerGpu"]
    assert st["replans"][0]["cause"] == "DataDenser"
    assert "40 objects/image on average measured, plan assumed 16" in st["replans"][0]["reason"]
    h.settle(3)
    for pod in h.api.pods(NS).values():
        assert pod["metadata"]["labels"]["yolofit.io/attempt"] == "1"
        assert config_of(pod)["mean_objects_per_image"] == 40
    assert len(h.status["replans"]) == 1
