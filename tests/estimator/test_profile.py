"""Profiles: JSON round trip, the store, estimate() arithmetic, model identity, purity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolofit.estimator.profile import (
    COMPONENTS,
    Profile,
    ProfileKey,
    ProfileMissing,
    ProfileStore,
    Terms,
    UnknownModel,
    estimate,
    resolve_model,
    write_profiles,
)

from .builders import GiB, MiB, gpu, key, profile

big_ints = st.integers(-(2**40), 2**40)
terms = st.builds(Terms, big_ints, big_ints, big_ints)
keys = st.builds(
    ProfileKey,
    model=st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True),
    config_hash=st.from_regex(r"[0-9a-f]{12}", fullmatch=True),
    imgsz=st.integers(32, 4096), amp=st.sampled_from(["off", "fp16", "bf16"]),
    optimizer=st.sampled_from(["SGD", "AdamW", "MuSGD"]), nc=st.integers(1, 10_000),
    checkpointing=st.booleans())
profiles = st.builds(
    Profile, key=keys, params=st.integers(0, 2**34), allocated=terms, reserved=terms,
    breakdown=st.dictionaries(st.sampled_from(COMPONENTS), terms),
    traced_at=st.lists(st.fixed_dictionaries({"batch": st.integers(1, 64),
                                              "objects": st.integers(0, 400)}), max_size=3),
    source=st.text(max_size=30))


@settings(deadline=None)  # a loaded CI machine must not fail a pure round trip
@given(profiles)
def test_profile_json_round_trip(p: Profile) -> None:
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@settings(deadline=None)
@given(keys)
def test_key_id_round_trip(k: ProfileKey) -> None:
    assert ProfileKey.from_id(k.id) == k
    assert ProfileKey.from_dict(k.to_dict()) == k


def test_key_id_is_stable() -> None:
    assert key().id == "yolov8s|abc123def456|640|fp16|AdamW|nc80|ckpt0"


@settings(deadline=None)
@given(terms, st.integers(0, 1024), st.integers(0, 1024))
def test_terms_at(t: Terms, batch: int, objects: int) -> None:
    assert t.at(batch, objects) == t.fixed + t.per_sample * batch + t.per_object * batch * objects


def test_store_put_get_and_reload(tmp_path: Path) -> None:
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    assert store.get(key()) is None
    with pytest.raises(ProfileMissing):
        store.require(key())
    p = profile(key())
    path = store.put(p)
    assert path.parent == tmp_path and path.is_file()
    assert store.get(key()) == p
    fresh = ProfileStore(cache_dir=tmp_path, shipped=None)
    assert fresh.get(key()) == p
    assert fresh.keys() == [key()]


def test_store_reads_shipped_then_cache_and_skips_bad_entries(tmp_path: Path) -> None:
    shipped = tmp_path / "profiles.json"
    write_profiles(shipped, [profile(key(640)), profile(key(320))])
    data = json.loads(shipped.read_text())
    data["profiles"].append({"key": {"model": "broken"}})
    shipped.write_text(json.dumps(data))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "garbage.json").write_text("{not json")
    newer = profile(key(640), fixed=2 * GiB)
    ProfileStore(cache_dir=cache, shipped=None).put(newer)
    store = ProfileStore(cache_dir=cache, shipped=shipped)
    assert store.get(key(640)) == newer  # the cache overrides the shipped file
    assert store.get(key(320)) is not None
    assert store.imgsz_available(key(999)) == [640, 320]


def test_store_uses_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOFIT_PROFILE_DIR", str(tmp_path))
    assert ProfileStore().cache_dir == tmp_path


def test_store_refresh_sees_profiles_written_elsewhere(tmp_path: Path) -> None:
    store = ProfileStore(cache_dir=tmp_path, shipped=None)
    assert store.get(key()) is None
    ProfileStore(cache_dir=tmp_path, shipped=None).put(profile(key()))
    assert store.get(key()) is None  # loaded once, cached
    store.refresh()
    assert store.get(key()) is not None


def test_estimate_adds_gpu_constants() -> None:
    p = profile(key(), fixed=1 * GiB, per_sample=100 * MiB, per_object=1 * MiB,
                overhead=Terms(10 * MiB, 1 * MiB))
    g = gpu(context=300 * MiB, cublas=64 * MiB, cudnn=128 * MiB, fragmentation=0.1)
    est = estimate(p, batch=4, objects=5, gpu=g)  # 5 per image -> 20 per sample (mosaic)
    allocated = 1 * GiB + 400 * MiB + 4 * 20 * MiB  # 1504 MiB
    traced_reserved = allocated + 14 * MiB  # 1518 MiB
    frag = 152 * MiB  # 10 % = 151.8 MiB, rounded up to whole 2 MiB blocks
    assert est.peak_allocated_bytes == allocated + 192 * MiB
    assert est.peak_reserved_bytes == traced_reserved + 192 * MiB + frag
    assert est.device_total_bytes == est.peak_reserved_bytes + 300 * MiB
    assert est.breakdown["fragmentation"] == frag
    assert est.breakdown["cuda_context"] == 300 * MiB
    assert est.breakdown["allocator_overhead"] == 14 * MiB
    assert list(est.breakdown)[:2] == ["weights", "gradients"]
    no_mosaic = estimate(p, batch=4, objects=20, gpu=g, mosaic=False)
    assert no_mosaic.peak_allocated_bytes == est.peak_allocated_bytes
    assert set(est.to_dict()) >= {"peak_allocated_bytes", "peak_reserved_bytes",
                                  "device_total_bytes", "breakdown"}


def test_planner_and_profile_import_without_torch() -> None:
    code = ("import sys, yolofit.estimator.planner, yolofit.estimator.cli;"
            "bad = [m for m in ('torch', 'ultralytics', 'kopf', 'kubernetes') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["yolov3u.yaml", "yolov5su.yaml", "yolov5s6.yaml",
                                  "yolov6n.yaml", "yolov8s.yaml", "yolov8x6.yaml", "yolov9c.yaml",
                                  "yolov10b.yaml", "yolo11m.yaml", "yolo12l.yaml", "yolo26n.yaml"])
def test_resolve_model_matches_ultralytics(name: str) -> None:
    from ultralytics.nn.tasks import yaml_model_load

    from yolofit.estimator.profile import config_hash

    ref = resolve_model(name)
    assert ref.config_hash == config_hash(yaml_model_load(name))


def test_resolve_model_scales_differ_and_unknown_raises() -> None:
    assert resolve_model("yolov8s.yaml").config_hash != resolve_model("yolov8m").config_hash
    assert resolve_model("yolov8s").name == "yolov8s"
    with pytest.raises(UnknownModel):
        resolve_model("yolov99x.yaml")


def test_resolve_local_yaml(tmp_path: Path) -> None:
    src = resolve_model("yolov8s.yaml").path.read_text()
    local = tmp_path / "mine.yaml"
    local.write_text(src)
    ref = resolve_model(str(local))
    assert ref.name == "mine" and ref.path == local


def test_resolve_reads_a_yaml_once_per_version_and_hands_out_copies(tmp_path: Path) -> None:
    """Parsed YAMLs are remembered per (path, mtime, size): every admission review resolves
    its model. A caller that writes into its config (Ultralytics' constructors set nc)
    changes no later answer, and a file rewritten on disk is read again."""
    first = resolve_model("yolo11s")
    first.config["nc"] = 3
    first.config["head"].append(["junk"])
    again = resolve_model("yolo11s")
    assert again.config.get("nc") != 3 and ["junk"] not in again.config["head"]
    assert again.config_hash == first.config_hash
    local = tmp_path / "mine.yaml"
    local.write_text(resolve_model("yolov8s.yaml").path.read_text())
    before = resolve_model(str(local)).config_hash
    local.write_text(local.read_text().replace("n: [0.33, 0.25, 1024]", "n: [0.33, 0.5, 1024]"))
    os.utime(local, ns=(1, 1))  # a new version even on a coarse-grained clock
    assert resolve_model(str(local)).config_hash != before


def test_resolve_pt_named_like_a_shipped_model_needs_no_torch() -> None:
    code = ("import sys; from yolofit.estimator.profile import resolve_model as r;"
            "assert r('weights/yolov8s.pt').config_hash == r('yolov8s.yaml').config_hash;"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_custom_pt_reads_its_config(tmp_path: Path) -> None:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "best.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False)}, path)
    ref = resolve_model(str(path))
    assert ref.name == "best"
    assert ref.config_hash == resolve_model("yolov8n.yaml").config_hash  # nc is keyed apart
