"""`yolofit data stats` on generated datasets whose densest image is known."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import yolofit.cli
from yolofit.estimator.density import dataset_stats, split_stats
from yolofit.trainer.synthetic import make_synthetic_dataset

COUNTS = [2, 0, 7, 3, 41, 1, 5, 9, 4, 6]  # 8 train (densest 41), 2 val


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("dense"), n_train=8, n_val=2,
                                  imgsz=128, nc=3, objects=COUNTS)


def test_reports_the_densest_image_exactly(data: Path) -> None:
    train, val = dataset_stats(data)
    assert (train.split, train.images, train.max, train.objects) == ("train", 8, 41, 68)
    assert train.max_per_sample == 41 + 9 + 7 + 5  # mosaic: the four densest images
    assert train.mean == pytest.approx(68 / 8)
    assert (val.images, val.max, val.max_per_sample) == (2, 6, 6)  # no mosaic in val
    assert "label files" in train.source


def test_reads_ultralytics_label_cache(data: Path, tmp_path: Path) -> None:
    labels = data.parent / "labels" / "train"
    cache = labels.with_suffix(".cache")
    fake = [{"cls": np.zeros((n, 1))} for n in [1] * 7 + [99]]  # differs from the files
    np.save(str(cache), {"labels": fake}, allow_pickle=True)
    Path(str(cache) + ".npy").rename(cache)
    try:
        train = dataset_stats(data)[0]
        assert train.max == 99 and "label cache" in train.source
    finally:
        cache.unlink()


def test_cli_json(data: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(yolofit.cli, "_COMMAND_MODULES", ("yolofit.estimator.cli",))
    assert yolofit.cli.main(["data", "stats", str(data), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["max"] == 41 and doc[0]["p99"] == 41


@pytest.mark.parametrize(("counts", "mosaic", "p99", "per_sample"), [
    ([1] * 99 + [50], True, 1, 53), ([1] * 99 + [50], False, 1, 50), ([], True, 0, 0)])
def test_split_stats_table(counts: list[int], mosaic: bool, p99: int, per_sample: int) -> None:
    s = split_stats("train", counts, "x", mosaic)
    assert (s.p99, s.max_per_sample) == (p99, per_sample)


@pytest.mark.parametrize(("text", "says"), [
    ("train: [images/train\nval: x\n", r"is not valid YAML \(line 2, column 4\): "),
    ("- images/train\n- images/val\n", "holds a list, not a dataset mapping"),
])
def test_a_data_yaml_that_is_not_a_dataset_is_one_line_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        text: str, says: str) -> None:
    """`yolofit data stats` and the trainer's own check (spec.data) say what is wrong with
    the file, not a PyYAML traceback."""
    from yolofit.trainer.config import TrainConfig
    from yolofit.trainer.errors import DataMissing
    from yolofit.trainer.trainer import check_inputs

    bad = tmp_path / "data.yaml"
    bad.write_text(text)
    monkeypatch.setattr(yolofit.cli, "_COMMAND_MODULES", ("yolofit.estimator.cli",))
    assert yolofit.cli.main(["data", "stats", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert re.search(f"^yolofit data: error: DATA: {re.escape(str(bad))} {says}", err), err
    with pytest.raises(DataMissing, match=f"^dataset {re.escape(str(bad))} {says}.*spec.data"):
        check_inputs(TrainConfig(model="yolov8n.yaml", data=str(bad), batch_per_gpu=4))
