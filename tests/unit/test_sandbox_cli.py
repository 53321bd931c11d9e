"""`yolofit sandbox` argument handling that needs no running sandbox."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from yolofit.cli import UsageError
from yolofit.sandbox import cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="yolofit")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("YOLOFIT_SANDBOX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("sub", ["down", "status", "kubeconfig"])
def test_without_a_running_sandbox_says_how_to_start_one(sub: str) -> None:
    with pytest.raises(UsageError, match="no sandbox is running .*yolofit sandbox up"):
        run(["sandbox", sub])


def test_missing_fleet_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--fleet .*nope.yaml: no such file"):
        run(["sandbox", "up", "--fleet", str(tmp_path / "nope.yaml")])


def test_down_forgets_a_sandbox_whose_data_is_gone(home: Path, tmp_path: Path) -> None:
    home.mkdir()
    (home / "current").symlink_to(tmp_path / "gone")
    assert run(["sandbox", "down"]) == 0
    assert not (home / "current").is_symlink()
