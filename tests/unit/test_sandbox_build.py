"""Building binaries: a missing Go or a failed build names the step and shows the log's
tail; a second run with the same inputs builds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from yolofit.sandbox import build
from yolofit.sandbox.errors import SandboxError

_no_go = shutil.which("go") is None and not any(Path(p).exists() for p in build.GO_FALLBACKS)


def needs_go(test: Any) -> Any:
    """Real `go build` runs: the slow tier, and only where Go is installed."""
    return pytest.mark.slow(pytest.mark.skipif(_no_go, reason="needs the Go toolchain")(test))


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deploy/ folder with one tiny Go module, and a private cache."""
    monkeypatch.setenv("YOLOFIT_CACHE_DIR", str(tmp_path / "cache"))
    mod = tmp_path / "deploy" / "hello"
    mod.mkdir(parents=True)
    (mod / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (mod / "go.sum").write_text("")
    (mod / "main.go").write_text('package main\n\nfunc main() { println("hi") }\n')
    return mod


def test_missing_go_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(build, "GO_FALLBACKS", ())
    with pytest.raises(SandboxError, match=r"^Go toolchain not found: install Go >= 1.26"):
        build.ensure_built()


@needs_go
def test_build_once_then_cached(module: Path) -> None:
    target = build.Target("hello", "hello", "example.com/hello")
    said: list[str] = []
    bins = build.ensure_built(said.append, targets=(target,), deploy=module.parent)
    assert bins["hello"].is_file()
    assert said[1].startswith("[1/1] building hello (example.com/hello) ... log: ")
    assert said[2].startswith("[1/1] built hello in ")
    said.clear()
    build.ensure_built(said.append, targets=(target,), deploy=module.parent)
    assert said == []  # nothing to do
    (module / "go.sum").write_text("\n")  # inputs changed -> rebuilt
    build.ensure_built(said.append, targets=(target,), deploy=module.parent)
    assert any("built hello" in s for s in said)


@needs_go
def test_failed_build_names_the_step_and_shows_the_log(module: Path) -> None:
    (module / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    target = build.Target("hello", "hello", "example.com/hello")
    with pytest.raises(SandboxError) as err:
        build.ensure_built(targets=(target,), deploy=module.parent)
    first, *rest = str(err.value).splitlines()
    assert first.startswith("build step [1/1] hello failed (go build exit 1 after ")
    assert "build-hello.log ---" in rest[0]
    assert "undefined: undefinedThing" in "\n".join(rest)
    assert not (build.bin_dir() / "hello").exists()
