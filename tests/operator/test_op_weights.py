"""spec.weights and .pt models at admission: the plan is made from the architecture, a name
that implies none is refused in one line naming the field and the fix (issue 11 item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opfixtures import make_profiles

from yolofit.estimator.profile import ProfileStore
from yolofit.operator import admission, policy, ultralytics_args, weights
from yolofit.operator.api import GPUCapacityPolicySpec, Plan, YOLOTrainingJobSpec
from yolofit.operator.fleet import FleetNode
from yolofit.operator.launch import train_config

T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
MOUNTS = [{"name": "data", "mountPath": "/data"}, {"name": "ckpt", "mountPath": "/ckpt/"}]
VOLUMES = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
           {"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt"}}]


def spec(**kw: Any) -> YOLOTrainingJobSpec:
    return YOLOTrainingJobSpec.model_validate({"data": "/data/d.yaml", "volumeMounts": MOUNTS,
                                               "volumes": VOLUMES, **kw})


@pytest.mark.parametrize(("kw", "field", "fix"), [
    ({"model": "/data/runs/best.pt"}, "spec.model: best.pt names no architecture",
     "set spec.model to the architecture (e.g. yolo11m) and spec.weights: /data/runs/best.pt"),
    ({"model": "best.pt"}, "spec.model: best.pt names no architecture",
     "spec.weights: /data/best.pt"),
    ({"model": "/data/yolo11m_ft.pt"}, "spec.model: yolo11m_ft.pt names no architecture",
     "spec.weights: /data/yolo11m_ft.pt"),
    ({"model": "/data/yolov8.pt"}, "spec.model: yolov8.pt names the family yolov8 but no "
     "scale", "(e.g. yolov8s) and spec.weights: /data/yolov8.pt"),
    ({"model": "/data/yolo11-seg.pt"}, "spec.model: yolo11-seg.pt names the family",
     "(e.g. yolo11s-seg)"),
    ({"model": "/data/yolo11m.pt", "weights": "/data/best.pt"},
     "spec.model: /data/yolo11m.pt is a checkpoint and spec.weights is /data/best.pt",
     "set spec.model to the architecture"),
    ({"model": "yolo11m", "weights": "runs/best.pt"}, "spec.weights: 'runs/best.pt' is not an "
     "absolute path", "inside a mounted volume"),
    ({"model": "yolo11m", "weights": "/data/best.ckpt"}, "spec.weights: '/data/best.ckpt' is "
     "not a .pt checkpoint", "/data/runs/best.pt"),
    ({"model": "yolo11m", "weights": "/data/../etc/best.pt"}, "spec.weights: "
     "'/data/../etc/best.pt' is not a normalised path", "'/etc/best.pt'"),
    ({"model": "yolo11m", "weights": "/datasets/best.pt"}, "spec.weights: /datasets/best.pt is "
     "not under any of spec.volumeMounts (mountPath: /data, /ckpt)", "mount the volume"),
    ({"model": "yolo11m.pt"}, "spec.model: 'yolo11m.pt' is not an absolute path",
     "or spec.model: yolo11m to train the architecture from scratch; nothing is downloaded"),
    ({"model": "/models/yolo11m.pt"}, "spec.model: /models/yolo11m.pt is not under any of "
     "spec.volumeMounts", "mount the volume"),
])
def test_refusals_name_the_field_and_the_fix(kw: dict[str, Any], field: str, fix: str) -> None:
    errors = weights.errors(spec(**kw))
    assert len(errors) == 1, errors
    assert errors[0].startswith(field) and fix in errors[0] and "\n" not in errors[0], errors


@pytest.mark.parametrize(("kw", "arch", "ckpt"), [
    ({"model": "yolo11m", "weights": "/data/runs/best.pt"}, "yolo11m", "/data/runs/best.pt"),
    ({"model": "yolo11m.yaml", "weights": "/ckpt/a/last.pt"}, "yolo11m.yaml", "/ckpt/a/last.pt"),
    ({"model": "/data/yolo11m-seg.pt"}, "yolo11m-seg", "/data/yolo11m-seg.pt"),
    ({"model": "/data/w/yolov8s6.pt"}, "yolov8s-p6", "/data/w/yolov8s6.pt"),
    ({"model": "yolov8s"}, "yolov8s", None),
])
def test_accepted_architecture_and_checkpoint(kw: dict[str, Any], arch: str,
                                              ckpt: str | None) -> None:
    s = spec(**kw)
    assert weights.errors(s) == []
    assert weights.architecture(s) == arch and weights.checkpoint(s) == ckpt


def test_task_rules_keep_working_with_a_checkpoint() -> None:
    s = spec(model="/data/yolo11m-seg.pt")
    assert admission.job_task(s) == "segment" and admission.task_error(s) is None
    wrong = admission.task_error(spec(model="/data/yolo11m-seg.pt", task="detect"))
    assert wrong is not None and wrong.startswith("spec.task: ")
    s = spec(model="yolo11m-seg", weights="/data/runs/best.pt")
    assert admission.job_task(s) == "segment"


def test_pretrained_in_args_is_refused_for_spec_weights() -> None:
    errors = ultralytics_args.validate({"pretrained": "/data/best.pt"})
    assert errors and "spec.weights" in errors[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    d: Path = tmp_path_factory.mktemp("p")
    make_profiles(d, "yolov8n", fixed_gib=1.0, per_sample_mib=200)
    return ProfileStore(d, shipped=None)


def _decide(s: YOLOTrainingJobSpec, store: ProfileStore) -> admission.Decision:
    pol = policy.with_default_rule(GPUCapacityPolicySpec(), policy.default_rule(16, 64))
    classes = policy.effective_classes(pol, [FleetNode("t4-0", T4, 4)])
    return admission.decide("j", "team-a", s, pol, classes, store)


@pytest.mark.parametrize("kw", [{"model": "yolov8n", "weights": "/data/runs/best.pt"},
                                {"model": "/data/runs/yolov8n.pt"}])
def test_a_job_with_weights_is_planned_from_its_architecture(kw: dict[str, Any],
                                                              store: ProfileStore) -> None:
    """Never left Profiling because of its weights' file name: the yolov8n profile plans it."""
    decision = _decide(spec(classes=80, imgsz=640, **kw), store)
    assert decision.missing is None and not decision.errors
    assert decision.plan is not None and decision.plan.profile.startswith("yolov8n")


def test_a_checkpoint_name_with_no_architecture_is_refused_not_profiled(
        store: ProfileStore) -> None:
    decision = _decide(spec(model="/data/runs/best.pt"), store)
    assert decision.missing is None and decision.plan is None
    assert decision.errors == ("spec.model: best.pt names no architecture; set spec.model to "
                               "the architecture (e.g. yolo11m) and spec.weights: "
                               "/data/runs/best.pt",)


def test_the_pod_config_gets_architecture_weights_and_classes() -> None:
    plan = Plan(gpu_class="t4", nodes=1, gpus_per_node=1, gpus=1, batch_per_gpu=8,
                accumulate=8, amp="fp16", imgsz=640)
    cfg = train_config("j", "ns", spec(model="yolo11m", weights="/data/runs/best.pt",
                                       classes=3), plan, 0)
    assert (cfg["model"], cfg["weights"], cfg["classes"]) == ("yolo11m.yaml",
                                                              "/data/runs/best.pt", 3)
    cfg = train_config("j", "ns", spec(model="/data/yolo11m-seg.pt"), plan, 0)
    assert (cfg["model"], cfg["weights"]) == ("yolo11m-seg.yaml", "/data/yolo11m-seg.pt")
    assert train_config("j", "ns", spec(model="yolov8s"), plan, 0)["weights"] is None
    from yolofit.trainer.config import TrainConfig

    TrainConfig.model_validate(cfg)  # the trainer reads what the operator writes


def test_a_model_differs_summary_parses() -> None:
    """The pod summary with model-differs (exit 4) and model_found reaches the operator's
    parser intact (the re-plan on it is wired elsewhere)."""
    from yolofit.operator.feedback import parse_summary
    from yolofit.trainer.summary import Summary, encode

    found = {"model": "yolo11l", "nc": 80}
    text = encode([Summary(rank=r, exit_reason="model-differs" if r else "error",
                           message="model: training would build yolo11l", model_found=found)
                   for r in (0, 1)])
    assert '"model_found":{"model":"yolo11l","nc":80}' in text
    report = parse_summary(text, 0, "p")
    assert report is not None and not report.rejected
    assert report.exit_reason == "model-differs"
    assert [r.exit_reason for r in report.ranks] == ["error", "model-differs"]
    assert report.ranks[1].message.startswith("model: training would build")


def test_the_readme_example_is_admissible() -> None:
    """README's "Fine-tuning from your own checkpoint" spec passes these rules as written."""
    import re

    import yaml

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Fine-tuning from your own checkpoint", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    s = YOLOTrainingJobSpec.model_validate(yaml.safe_load(block.group(1))["spec"])
    assert weights.errors(s) == [] and weights.architecture(s) == "yolo11m"
    assert weights.errors(spec(model="/data/runs/best.pt"))[0] in readme.replace("\n", " ")
