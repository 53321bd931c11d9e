"""Where the sandbox finds its inputs (the checkout's deploy/ folder) and keeps its
outputs (a cache outside the checkout, keyed by version, so fresh clones reuse it)."""

from __future__ import annotations

import os
from pathlib import Path

from yolofit.sandbox.errors import SandboxError


def cache_root() -> Path:
    """~/.cache/yolofit, or $YOLOFIT_CACHE_DIR (binaries, build logs, sandbox state)."""
    env = os.environ.get("YOLOFIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "yolofit"


def sandbox_home() -> Path:
    """Where `yolofit sandbox up` records the running sandbox ($YOLOFIT_SANDBOX_HOME)."""
    env = os.environ.get("YOLOFIT_SANDBOX_HOME")
    return Path(env).expanduser() if env else cache_root() / "sandbox"


def deploy_dir() -> Path:
    """The checkout's deploy/ folder (go.mod files, fleet.yaml, kwok stages).

    $YOLOFIT_DEPLOY_DIR overrides it for installs outside a checkout.
    """
    env = os.environ.get("YOLOFIT_DEPLOY_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "deploy"
    if not (path / "k8s" / "go.mod").is_file():
        raise SandboxError(
            f"deploy folder not found at {path} (expected k8s/go.mod there); "
            "run from a yolofit checkout or set YOLOFIT_DEPLOY_DIR"
        )
    return path


def tool(name: str) -> str | None:
    """A command installed beside this interpreter (the venv's kubectl, hadolint, yolofit),
    else the one on PATH; None when neither exists."""
    import shutil
    import sys

    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name)
