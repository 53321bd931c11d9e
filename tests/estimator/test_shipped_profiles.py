"""The shipped profiles belong to the installed Ultralytics (issue 14, item 5).

A profile is keyed by the hash of its model's config. If an Ultralytics release changes a model
YAML, the webhook computes a new hash, finds no shipped profile and sends every job of that model
to Profiling - silently. This recomputes each shipped profile's hash with Ultralytics' own loader
from the installed package and fails on drift, naming the models to re-trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from importlib.metadata import version

import pytest

from yolofit.estimator.identity import config_hash, resolve_model
from yolofit.estimator.precompute import SHIPPED_MODELS, TASK_MODELS, field_models
from yolofit.estimator.profile import SHIPPED_PROFILES, ProfileKey, _read_profiles


def shipped_keys() -> list[ProfileKey]:
    return [p.key for p in _read_profiles(SHIPPED_PROFILES)]


@cache
def ultralytics_hash(model: str) -> str:
    """The hash of the config as the installed Ultralytics loads it (what the tracer builds)."""
    import re

    from ultralytics.nn.tasks import yaml_model_load

    kpt = re.fullmatch(r"(.+-pose)-kpt(\d+)x(\d+)", model)  # a pose head rebuilt for the data
    if kpt:
        return config_hash({**yaml_model_load(f"{kpt.group(1)}.yaml"),
                            "kpt_shape": [int(kpt.group(2)), int(kpt.group(3))]})
    return config_hash(yaml_model_load(f"{model}.yaml"))


def drifted(keys: Iterable[ProfileKey], installed: Callable[[str], str]) -> dict[str, str]:
    """Model -> 'shipped <hash>, installed <hash>' for every model whose profiles were traced
    from a config the installed package no longer has."""
    out = {}
    for k in keys:
        now = installed(k.model)
        if now != k.config_hash:
            out[k.model] = f"shipped {k.config_hash}, installed {now}"
    return out


def drift_message(stale: dict[str, str]) -> str:
    models = sorted(stale)
    which = "; ".join(f"{m}: {stale[m]}" for m in models)
    return (f"shipped profiles were traced from model configs that Ultralytics "
            f"{version('ultralytics')} no longer has ({which}): drop their entries from "
            f"{SHIPPED_PROFILES.name} and re-trace them with "
            f"`python -m yolofit.estimator.precompute --models {' '.join(models)} "
            f"--checkpointing off on`")


def test_every_shipped_model_has_profiles() -> None:
    assert {k.model for k in shipped_keys()} == {*SHIPPED_MODELS, *TASK_MODELS, *field_models()}


def test_shipped_profiles_match_the_installed_ultralytics() -> None:
    keys = shipped_keys()
    stale = drifted(keys, ultralytics_hash)
    assert not stale, drift_message(stale)
    # The admission path resolves models without Ultralytics' loader (no torch in the
    # webhook); it must reach the same hashes, or every job would go to Profiling anyway.
    assert not drifted(keys, lambda m: resolve_model(m).config_hash)


def test_drift_is_caught_and_names_the_models_to_retrace() -> None:
    """A patch release that edits yolov8s.yaml: the check names yolov8s, and only it."""
    keys = shipped_keys()

    def patched(model: str) -> str:
        return "0123456789ab" if model == "yolov8s" else ultralytics_hash(model)

    stale = drifted(keys, patched)
    assert list(stale) == ["yolov8s"]
    message = drift_message(stale)
    shipped = next(k.config_hash for k in keys if k.model == "yolov8s")
    assert f"(yolov8s: shipped {shipped}, installed 0123456789ab)" in message
    assert "--models yolov8s --checkpointing off on" in message


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_shipped_hash_is_what_the_planner_looks_up(model: str) -> None:
    """The key the planner builds for a request of this model finds a shipped profile."""
    from yolofit.estimator.planner import PlanRequest, _base_key
    from yolofit.estimator.profile import ProfileStore

    store = ProfileStore(cache_dir="/nonexistent-yolofit-cache")
    key = _base_key(PlanRequest(model=model, imgsz=640), "fp16")
    assert store.get(key) is not None, key.id
