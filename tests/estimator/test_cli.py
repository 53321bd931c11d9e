"""`yolofit estimate|plan|profiles`: one-line errors naming the flag; JSON keys."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import yolofit.cli
from yolofit.estimator.latency import synthetic_profile
from yolofit.estimator.profile import ProfileKey, ProfileStore, resolve_model


@pytest.fixture(autouse=True)
def only_estimator_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # Other layers register their own subcommands; these tests need only ours.
    monkeypatch.setattr(yolofit.cli, "_COMMAND_MODULES", ("yolofit.estimator.cli",))
    monkeypatch.setenv("YOLOFIT_PROFILE_DIR", str(tmp_path))
    monkeypatch.setattr("yolofit.estimator.profile.SHIPPED_PROFILES", tmp_path / "none.json")
    return tmp_path


def _seed(cache: Path, model: str, imgsz: int = 640, amps=("off", "fp16")) -> None:
    ref = resolve_model(model)
    store = ProfileStore(cache_dir=cache, shipped=None)
    for amp in amps:
        for ckpt in (False, True):
            store.put(synthetic_profile(ProfileKey(ref.name, ref.config_hash, imgsz, amp, "AdamW",
                                                   80, ckpt)))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = yolofit.cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "flag"), [
    (["estimate", "--model", "yolov99x.yaml"], "--model"),
    (["estimate", "--model", "yolov8s.yaml", "--imgsz", "100"], "--imgsz"),
    (["estimate", "--model", "yolov8s.yaml", "--imgsz", "-64"], "--imgsz"),
    (["estimate", "--model", "yolov8s.yaml", "--imgsz", "big"], "--imgsz"),
    (["estimate", "--model", "yolov8s.yaml", "--batch", "0"], "--batch"),
    (["estimate", "--model", "yolov8s.yaml", "--batch", "-4"], "--batch"),
    (["estimate", "--model", "yolov8s.yaml", "--amp", "fp8"], "--amp"),
    (["estimate", "--model", "yolov8s.yaml", "--optimizer", "Adam"], "--optimizer"),
    (["estimate", "--model", "yolov8s.yaml", "--objects", "-1"], "--objects"),
    (["estimate", "--model", "yolov8s.yaml", "--gpu", "v100"], "--gpu"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15XB"], "--gpu-memory"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "12"], "--gpu-memory"),
    (["plan", "--model", "yolo11m.yaml"], "--gpu-memory"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-class", "v100"], "--gpu-class"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15GiB", "--gpus", "0"], "--gpus"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15GiB", "--nbs", "x"], "--nbs"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15GiB", "--amp", "half"], "--amp"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15GiB", "--min-imgsz", "33"],
     "--min-imgsz"),
    (["plan", "--model", "yolo11m.yaml", "--gpu-memory", "15GiB", "--headroom", "2"],
     "--headroom"),
])
def test_bad_input_is_one_line_naming_the_flag(argv: list[str], flag: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"yolofit {argv[0]}: error: {flag}: ")


def test_unknown_model_lists_families(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run(["estimate", "--model", "yolov99x.yaml"], capsys)
    for family in ("yolov8", "yolo11", "yolo26", "yolov5", "yolov10"):
        assert family in err


def test_estimate_json_keys(only_estimator_commands: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    _seed(only_estimator_commands, "yolov8s.yaml")
    code, out, err = run(["estimate", "--model", "yolov8s.yaml", "--imgsz", "640", "--batch", "16",
                          "--amp", "fp16", "--objects", "50", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"peak_allocated_bytes", "peak_reserved_bytes", "device_total_bytes",
            "breakdown"} <= set(doc)
    assert doc["peak_allocated_bytes"] <= doc["peak_reserved_bytes"] < doc["device_total_bytes"]
    assert {"weights", "gradients", "optimizer_state", "ema", "activations", "loss",
            "cuda_context", "cublas_workspace", "cudnn_workspace"} <= set(doc["breakdown"])
    assert all(isinstance(v, int) for v in doc["breakdown"].values())


def test_estimate_table(only_estimator_commands: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(only_estimator_commands, "yolov8s.yaml")
    code, out, _ = run(["estimate", "--model", "yolov8s.yaml", "--batch", "8"], capsys)
    assert code == 0
    assert "weights" in out and "peak reserved" in out and "MiB" in out and "GiB" in out


def test_plan_json_fits(only_estimator_commands: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(only_estimator_commands, "yolo11m.yaml")
    code, out, err = run(["plan", "--model", "yolo11m.yaml", "--imgsz", "640", "--gpu-memory",
                          "15GiB", "--gpus", "2", "--nodes", "2", "--nbs", "64", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"fits", "batch_per_gpu", "accumulate", "amp", "checkpointing", "imgsz",
            "predicted_reserved_bytes", "usable_bytes", "reason", "ultralytics_args"} <= set(doc)
    assert doc["fits"] and doc["world_size"] == 4 and doc["amp"] == "fp16"
    assert doc["ultralytics_args"]["batch"] == doc["batch_per_gpu"] * 4
    assert "accumulate" not in doc["ultralytics_args"]


def test_plan_does_not_fit(only_estimator_commands: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    _seed(only_estimator_commands, "yolo11m.yaml")
    code, out, _ = run(["plan", "--model", "yolo11m.yaml", "--gpu-memory", "1GiB", "--json"],
                       capsys)
    doc = json.loads(out)
    assert code == 1 and not doc["fits"]
    assert "needs" in doc["reason"] and "usable" in doc["reason"]
    code, out, _ = run(["plan", "--model", "yolo11m.yaml", "--gpu-memory", "1GiB"], capsys)
    assert out.startswith("does not fit: yolo11m at imgsz 640 needs ")


def test_missing_profile_is_traced_once_and_cached(
        only_estimator_commands: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def build_profile(key: ProfileKey, progress=None):
        calls.append(key.id)
        if progress:
            progress(f"tracing {key.model}")
        print("optimizer: AdamW(...)")  # Ultralytics logs to stdout while tracing
        return synthetic_profile(key)

    monkeypatch.setitem(sys.modules, "yolofit.estimator.build",
                        types.SimpleNamespace(build_profile=build_profile))
    argv = ["estimate", "--model", "yolov8n.yaml", "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0 and len(calls) == 1
    assert "tracing yolov8n" in err and "cached" in err and "optimizer:" in err
    assert json.loads(out)["profile_id"] == calls[0]  # stdout is only the JSON
    code, _, err = run(argv, capsys)
    assert code == 0 and len(calls) == 1 and err == ""


def test_a_class_count_between_two_traced_ones_is_estimated_without_a_trace(
        only_estimator_commands: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ref = resolve_model("yolov8n.yaml")
    store = ProfileStore(cache_dir=only_estimator_commands, shipped=None)
    for nc in (1, 80):
        store.put(synthetic_profile(ProfileKey(ref.name, ref.config_hash, 640, "fp16", "AdamW",
                                               nc, False)))
    monkeypatch.setitem(sys.modules, "yolofit.estimator.build", None)  # a trace would fail
    code, out, err = run(["estimate", "--model", "yolov8n.yaml", "--nc", "3", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and err == "" and "|nc3|" in doc["profile_id"]
    assert doc["profile_source"].startswith("interpolated in nc between the traced profiles "
                                            "at nc=1 and nc=80")
    code, out, _ = run(["estimate", "--model", "yolov8n.yaml", "--nc", "3"], capsys)
    assert code == 0 and out.rstrip().endswith("(an upper bound: peak memory is convex in nc)")
    assert len(list(only_estimator_commands.glob("*.json"))) == 2  # nothing cached for nc 3


def test_bad_local_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 3\nbackbone: [[\n")
    code, _, err = run(["estimate", "--model", str(bad)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("yolofit estimate: error: --model: cannot read")


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a pickle, not a zip")
    code, _, err = run(["estimate", "--model", str(bad)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"yolofit estimate: error: --model: cannot load '{bad}' as an "
                          "Ultralytics checkpoint: ")


def test_plan_traces_every_missing_lever_profile(
        only_estimator_commands: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def build_profile(key: ProfileKey, progress=None):
        calls.append(key.id)
        return synthetic_profile(key, params=700_000_000)  # 14 GB of weights and states

    monkeypatch.setitem(sys.modules, "yolofit.estimator.build",
                        types.SimpleNamespace(build_profile=build_profile))
    code, out, _ = run(["plan", "--model", "yolov8n.yaml", "--gpu-class", "t4", "--json"], capsys)
    doc = json.loads(out)
    assert [c.split("|")[-1] for c in calls] == ["ckpt0", "ckpt1"]
    assert code == 1 and not doc["fits"]
    assert doc["reason"].endswith("it would fit on l4")  # the next larger class


def test_profiles_build_and_list(only_estimator_commands: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def build_profile(key: ProfileKey, progress=None):
        calls.append(key.id)
        return synthetic_profile(key)

    monkeypatch.setitem(sys.modules, "yolofit.estimator.build",
                        types.SimpleNamespace(build_profile=build_profile))
    argv = ["profiles", "build", "--model", "yolov8n.yaml,yolo11n", "--imgsz", "320,640",
            "--amp", "fp16", "--checkpointing"]
    code, _, _ = run(argv, capsys)
    assert code == 0 and len(calls) == 8
    code, _, err = run(argv, capsys)
    assert len(calls) == 8 and "already in the store" in err
    code, out, _ = run(["profiles", "list", "--json"], capsys)
    assert sorted(p["id"] for p in json.loads(out)) == sorted(calls)
    code, _, err = run(["profiles", "build", "--model", "yolov8n.yaml", "--imgsz", "300"], capsys)
    assert code == 2 and "--imgsz: " in err


def test_profiles_build_without_model_precomputes_the_shipped_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, object] = {}

    def keys_for(models, imgsz, amp, optimizers, checkpointing, nc):
        seen.update(models=list(models), imgsz=list(imgsz), amp=list(amp),
                    checkpointing=list(checkpointing))
        return ["k1", "k2"]

    def precompute(keys, out_path, progress=None, budget_seconds=None):
        seen.update(keys=keys, out=out_path, budget=budget_seconds)
        return [object(), object()]

    fake = types.SimpleNamespace(SHIPPED_MODELS=("yolov8n", "yolo11n"), keys_for=keys_for,
                                 precompute=precompute)
    monkeypatch.setitem(sys.modules, "yolofit.estimator.precompute", fake)
    out = tmp_path / "profiles.json"
    code, stdout, _ = run(["profiles", "build", "--imgsz", "320,640", "--amp", "fp16",
                           "--checkpointing", "--out", str(out), "--budget", "60"], capsys)
    assert code == 0 and stdout.strip() == f"2 profiles in {out}"
    assert seen == {"models": ["yolov8n", "yolo11n"], "imgsz": [320, 640], "amp": ["fp16"],
                    "checkpointing": [False, True], "keys": ["k1", "k2"], "out": out,
                    "budget": 60.0}


def test_estimate_and_plan_name_the_gpu_class_the_same_way(
        only_estimator_commands: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--gpu` and `--gpu-class` are one option in both commands (a user who estimated with
    `--gpu t4` plans with the same flag, not argparse's "ambiguous option")."""
    _seed(only_estimator_commands, "yolo11m.yaml")
    outs = []
    for flag in ("--gpu", "--gpu-class"):
        code, out, err = run(["plan", "--model", "yolo11m.yaml", flag, "t4", "--json"], capsys)
        assert code == 0, err
        outs.append(json.loads(out))
        code, out, err = run(["estimate", "--model", "yolo11m.yaml", flag, "a100-40gb",
                              "--json"], capsys)
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0] == outs[2] and outs[1] == outs[3]
    assert outs[0]["gpu_class"] == "t4"


@pytest.mark.parametrize(("argv", "imgsz"), [
    (["--model", "yolo11s-cls.yaml"], 224),  # Ultralytics' ClassificationTrainer default
    (["--model", "yolo11s-cls.yaml", "--imgsz", "640"], 640),
    (["--model", "yolo11s.yaml"], 640),
])
def test_imgsz_defaults_to_what_ultralytics_trains_the_task_at(
        only_estimator_commands: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        imgsz: int) -> None:
    _seed(only_estimator_commands, argv[1], imgsz=imgsz)
    code, out, err = run(["plan", *argv, "--gpu", "t4", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["imgsz"] == imgsz
    code, out, err = run(["estimate", *argv, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["profile_id"].split("|")[2] == str(imgsz)


def test_a_reader_that_leaves_early_is_not_a_traceback() -> None:
    """`yolofit ... | head -1`: the command ends quietly with 141 (128 + SIGPIPE), as cat
    does, not with a BrokenPipeError traceback."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "yolofit.cli", "crds"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command's first write (it starts in ~0.3 s)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
