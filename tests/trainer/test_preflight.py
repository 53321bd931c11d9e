"""Pre-flight: real Ultralytics checkpoints (built from YAML here, saved as Ultralytics saves
them, nothing downloaded) against the plan's architecture and classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from yolofit.sandbox.localrun import wait_pods
from yolofit.trainer.config import TrainConfig
from yolofit.trainer.errors import DataMissing, ModelDiffers
from yolofit.trainer.preflight import Side, check, compare, data_classes, relation
from yolofit.trainer.synthetic import make_synthetic_dataset

from .launch import Job, start_ranks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-class dataset (the data YAML's names)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("pf-data"), n_train=2, n_val=1,
                                  imgsz=64, nc=2)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Checkpoints as Ultralytics training leaves them: a model built from its YAML path
    (so its yaml carries yaml_file and scale), fp16, under 'model'."""
    from ultralytics.nn.tasks import DetectionModel

    root = tmp_path_factory.mktemp("pf-ckpt")
    out = {}
    for arch, nc in (("yolov8n", 2), ("yolov8s", 2), ("yolov8n", 80), ("yolo11n", 2)):
        model = DetectionModel(f"{arch}.yaml", nc=nc, verbose=False)
        path = root / f"{arch}-nc{nc}" / "best.pt"
        path.parent.mkdir()
        torch.save({"model": model.half(), "train_args": {}, "epoch": -1}, path)
        out[f"{arch}-{nc}"] = str(path)
    return out


def _cfg(data: Path, model: str, weights: str | None, classes: int | None) -> TrainConfig:
    return TrainConfig(model=model, weights=weights, classes=classes, data=str(data),
                       batch_per_gpu=2)


def test_same_architecture_and_classes_trains_the_plan_from_the_weights(
        data: Path, ckpts: dict[str, str]) -> None:
    result = check(_cfg(data, "yolov8n.yaml", ckpts["yolov8n-2"], 2), "detect")
    assert (result.model, result.pretrained) == ("yolov8n.yaml", ckpts["yolov8n-2"])
    assert result.finding is not None and result.finding.verdict == "as-planned"
    assert result.finding.model_found is None


def test_a_bigger_scale_stops_with_model_differs(data: Path, ckpts: dict[str, str]) -> None:
    with pytest.raises(ModelDiffers, match="re-plan as yolov8s") as exc:
        check(_cfg(data, "yolov8n.yaml", ckpts["yolov8s-2"], 2), "detect")
    assert exc.value.model_found == {"model": "yolov8s", "nc": 2}
    assert exc.value.reason == "model-differs"


def test_a_smaller_scale_trains_as_itself_and_reports_it(data: Path,
                                                          ckpts: dict[str, str]) -> None:
    result = check(_cfg(data, "yolov8s.yaml", ckpts["yolov8n-2"], 2), "detect")
    assert result.finding is not None and result.finding.verdict == "smaller"
    assert result.finding.model_found == {"model": "yolov8n", "nc": 2}
    assert (result.model, result.pretrained) == (ckpts["yolov8n-2"], None)


def test_another_family_is_model_differs_even_with_fewer_parameters(
        data: Path, ckpts: dict[str, str]) -> None:
    """yolo11n has fewer parameters than yolov8n, but its activations are another story:
    only a profile of yolo11n can say, so the operator re-plans."""
    with pytest.raises(ModelDiffers) as exc:
        check(_cfg(data, "yolov8n.yaml", ckpts["yolo11n-2"], 2), "detect")
    assert exc.value.model_found == {"model": "yolo11n", "nc": 2}


def test_more_data_classes_than_planned_stops(data: Path, ckpts: dict[str, str]) -> None:
    with pytest.raises(ModelDiffers, match="2 classes") as exc:
        check(_cfg(data, "yolov8n.yaml", ckpts["yolov8n-2"], 1), "detect")
    assert exc.value.model_found == {"model": "yolov8n", "nc": 2}
    with pytest.raises(ModelDiffers, match=r"re-plan with classes: 2"):  # no checkpoint
        check(_cfg(data, "yolov8n.yaml", None, 1), "detect")


def test_fewer_data_classes_trains_on_and_reports(data: Path, ckpts: dict[str, str]) -> None:
    result = check(_cfg(data, "yolov8n.yaml", ckpts["yolov8n-2"], 5), "detect")
    assert result.finding is not None and result.finding.verdict == "smaller"
    assert result.finding.model_found == {"model": "yolov8n", "nc": 2}
    assert result.pretrained == ckpts["yolov8n-2"]
    plain = check(_cfg(data, "yolov8n.yaml", None, 5), "detect")
    assert plain.finding is not None and plain.finding.model_found == {"model": "yolov8n",
                                                                       "nc": 2}
    assert check(_cfg(data, "yolov8n.yaml", None, 2), "detect").finding is None


def test_a_checkpoint_with_more_classes_widens_the_head(data: Path,
                                                         ckpts: dict[str, str]) -> None:
    """Ultralytics 8.4.190's Model.load rebuilds the Detect class branch at the checkpoint's
    width (c3 = max(64, min(80, 100)) = 80 for yolov8n instead of 64): more parameters
    than the plan's 2-class model, so the plan must use the checkpoint's nc."""
    with pytest.raises(ModelDiffers, match="80-class head") as exc:
        check(_cfg(data, "yolov8n.yaml", ckpts["yolov8n-80"], 2), "detect")
    assert exc.value.model_found == {"model": "yolov8n", "nc": 80}
    # planned with that nc, the same checkpoint and data train on
    result = check(_cfg(data, "yolov8n.yaml", ckpts["yolov8n-80"], 80), "detect")
    assert result.finding is not None and result.finding.verdict == "smaller"


def test_a_checkpoint_that_cannot_be_loaded_is_data_missing(data: Path,
                                                            tmp_path: Path) -> None:
    junk = tmp_path / "best.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataMissing, match=r"weights: cannot load .*best.pt"):
        check(_cfg(data, "yolov8n.yaml", str(junk), 2), "detect")
    with pytest.raises(DataMissing, match=r"checkpoint not found: .*nope.pt \(spec.weights"):
        check(_cfg(data, "yolov8n.yaml", str(tmp_path / "nope.pt"), 2), "detect")


def test_data_classes(tmp_path: Path, data: Path) -> None:
    assert data_classes(str(data)) == 2
    y = tmp_path / "d.yaml"
    y.write_text("nc: 7\n")
    assert data_classes(str(y)) == 7
    y.write_text("names: [a, b, c]\nnc: 7\n")
    assert data_classes(str(y)) == 3
    assert data_classes(str(tmp_path)) is None


def test_relation_by_scale() -> None:
    from yolofit.estimator.identity import resolve_model

    cfg = {n: dict(resolve_model(n).config) for n in ("yolo11n", "yolo11m", "yolo11l",
                                                         "yolov8m", "yolo11m-seg")}
    assert relation(cfg["yolo11m"], cfg["yolo11m"]) == "same"
    assert relation(cfg["yolo11m"], cfg["yolo11n"]) == "smaller"
    assert relation(cfg["yolo11m"], cfg["yolo11l"]) == "other"
    assert relation(cfg["yolo11m"], cfg["yolov8m"]) == "other"
    assert relation(cfg["yolo11m"], cfg["yolo11m-seg"]) == "other"


@pytest.mark.parametrize(("found", "rel", "verdict"), [
    (Side("m", "h", 3, 100), "same", "as-planned"),
    (Side("m", "h", 2, 90), "same", "smaller"),
    (Side("m", "h", 4, 110), "same", "bigger"),
    (Side("m", "h", 3, 101), "same", "bigger"),
    (Side("s", "h2", 3, 50), "smaller", "smaller"),
    (Side("x", "h3", 3, 50), "other", "bigger"),
])
def test_compare(found: Side, rel: str, verdict: str) -> None:
    finding = compare(Side("m", "h", 3, 100), found, rel)  # type: ignore[arg-type]
    assert finding.verdict == verdict
    assert (finding.model_found is None) == (verdict == "as-planned")
    if finding.model_found is not None:
        assert finding.model_found == {"model": found.model, "nc": found.nc}


@pytest.mark.slow
def test_training_starts_from_spec_weights(dataset: Path, ckpts: dict[str, str],
                                           tmp_path: Path) -> None:
    """A real CPU `yolofit train` pod of a job with spec.weights: the operator's pod config,
    the pre-flight, then Ultralytics trains yolov8n.yaml with pretrained=<weights>."""
    job = Job(data=dataset, output=tmp_path / "runs", nodes=1, batch_per_gpu=2, nbs=2,
              weights=ckpts["yolov8n-2"])
    ranks = start_ranks(job, tmp_path)
    assert wait_pods(ranks, timeout=600) == [0], ranks[0].output()[-3000:]
    out = ranks[0].output()
    assert re.search(r"Transferred (\d+)/\1 items from pretrained weights", out), out[-3000:]
    summary = ranks[0].summary()
    assert summary["exit_reason"] == "completed" and summary["steps"] > 0
    assert summary.get("model_found") is None
    args = yaml.safe_load((job.attempt_dir() / "args.yaml").read_text())
    assert (args["model"], args["pretrained"]) == ("yolov8n.yaml", ckpts["yolov8n-2"])


@pytest.mark.slow
def test_a_bigger_checkpoint_stops_before_the_first_step(dataset: Path, ckpts: dict[str, str],
                                                         tmp_path: Path) -> None:
    job = Job(data=dataset, output=tmp_path / "runs", nodes=1, batch_per_gpu=2, nbs=2,
              weights=ckpts["yolov8s-2"])
    ranks = start_ranks(job, tmp_path)
    assert wait_pods(ranks, timeout=300) == [4], ranks[0].output()[-3000:]
    summary = ranks[0].summary()
    assert summary["exit_reason"] == "model-differs" and summary["steps"] == 0
    assert summary["model_found"] == {"model": "yolov8s", "nc": 2}
    assert "Traceback" not in ranks[0].output()
