"""Fixtures for the shipping tests: a Helm binary built from deploy/helm/go.mod, and the
chart rendered with it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "yolofit"
MONITORING_API = "monitoring.coreos.com/v1"


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the Helm binary (built once into ~/.cache/yolofit/helm-<version>/bin)."""
    result = subprocess.run([str(ROOT / "scripts" / "build-helm.sh")], capture_output=True,
                            text=True, check=False, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"scripts/build-helm.sh failed:\n{result.stderr[-3000:]}", pytrace=False)
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[dict[str, Any]]]:
    """render(*helm template args) -> rendered objects (release yolofit, ns yolofit-system)."""

    def run(*args: str, namespace: str = "yolofit-system") -> list[dict[str, Any]]:
        out = subprocess.run([helm, "template", "yolofit", str(CHART), "--namespace", namespace,
                              *args], capture_output=True, text=True, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return run


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]
