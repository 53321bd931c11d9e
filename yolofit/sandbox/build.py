"""Build the control plane's binaries from Go modules into a versioned cache.

Each binary is built from a small module under deploy/ that pins its source:
deploy/k8s (kube-apiserver, kube-scheduler, kube-controller-manager from
k8s.io/kubernetes), deploy/etcd (etcd from go.etcd.io/etcd/server/v3) and
deploy/kwok (kwok from sigs.k8s.io/kwok). Outputs go to
~/.cache/yolofit/k8s-<version>/bin/ next to a stamp per binary (a hash of the
module's go.mod/go.sum, the package, the flags and the Go version); a binary whose
stamp matches is not rebuilt, so a second `up` and a fresh clone build nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.paths import cache_root, deploy_dir

KUBERNETES_VERSION = "v1.37.2"
# Kubernetes 1.37 requires the etcd v3.7 client; the newest v3.7 server matches it.
ETCD_VERSION = "v3.7.3"
KWOK_VERSION = "v0.8.0"

_K8S_LDFLAGS = (
    "-s -w"
    f" -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}"
    " -X k8s.io/component-base/version.gitMajor=1"
    " -X k8s.io/component-base/version.gitMinor=37"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """One binary: which module folder under deploy/ builds which package."""

    name: str
    module: str
    package: str
    ldflags: str = "-s -w"


TARGETS: tuple[Target, ...] = (
    Target("etcd", "etcd", "go.etcd.io/etcd/server/v3"),
    Target("kube-apiserver", "k8s", "k8s.io/kubernetes/cmd/kube-apiserver", _K8S_LDFLAGS),
    Target(
        "kube-controller-manager",
        "k8s",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        _K8S_LDFLAGS,
    ),
    Target("kube-scheduler", "k8s", "k8s.io/kubernetes/cmd/kube-scheduler", _K8S_LDFLAGS),
    Target("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok"),
)


def bin_dir() -> Path:
    """The versioned folder holding the built binaries."""
    return cache_root() / f"k8s-{KUBERNETES_VERSION}" / "bin"


def log_dir() -> Path:
    return cache_root() / f"k8s-{KUBERNETES_VERSION}" / "logs"


# Where Go's own installer and Debian's golang package put `go`, for a PATH without it.
GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def find_go() -> str:
    """The `go` command, or a SandboxError that says how to get one."""
    go = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
    if go is None:
        raise SandboxError(
            "Go toolchain not found: install Go >= 1.26 (https://go.dev/dl/) and put `go` on "
            "PATH; it builds kube-apiserver, etcd and kwok once into " + str(bin_dir())
        )
    return go


def _go_version(go: str) -> str:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def stamp_of(target: Target, go_version: str, deploy: Path) -> str:
    """Hash of everything that decides the binary's bytes."""
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        h.update((deploy / target.module / name).read_bytes())
    h.update(f"\0{target.package}\0{target.ldflags}\0{go_version}\0cgo=0\0trimpath".encode())
    return h.hexdigest()


def _stamp_path(target: Target, out: Path | None = None) -> Path:
    return (out or bin_dir()) / f".{target.name}.stamp"


def is_current(target: Target, stamp: str, out: Path | None = None) -> bool:
    binary = (out or bin_dir()) / target.name
    try:
        return os.access(binary, os.X_OK) and _stamp_path(target, out).read_text().strip() == stamp
    except OSError:
        return False


def binaries(targets: tuple[Target, ...] = TARGETS, out: Path | None = None) -> dict[str, Path]:
    """Paths of all binaries (whether or not they are built yet)."""
    return {t.name: (out or bin_dir()) / t.name for t in targets}


def ensure_built(
    progress: Progress | None = None,
    targets: tuple[Target, ...] = TARGETS,
    deploy: Path | None = None,
    out: Path | None = None,
) -> dict[str, Path]:
    """Build whatever is missing or stale; return name -> path of every binary.

    Cheap when everything is current (one `go env` call and five small hashes). A
    file lock keeps two concurrent callers from building the same binary twice.
    `out` is the versioned bin folder (default: the control plane's, `bin_dir()`);
    build logs go to its sibling logs/.
    """
    say = progress or (lambda _msg: None)
    deploy = deploy or deploy_dir()
    out = out or bin_dir()
    go = find_go()
    go_version = _go_version(go)
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "logs").mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = [t for t in targets if not is_current(t, stamp_of(t, go_version, deploy), out)]
        if todo:
            say(
                f"building {len(todo)} binaries into {out} "
                f"(first time only; each takes minutes on 2 cores)"
            )
        for i, target in enumerate(todo, 1):
            _build_one(
                go, target, deploy, stamp_of(target, go_version, deploy), f"[{i}/{len(todo)}]", say,
                out,
            )
    return binaries(targets, out)


def _build_one(go: str, target: Target, deploy: Path, stamp: str, step: str, say: Progress,
               out_dir: Path | None = None) -> None:
    out_dir = out_dir or bin_dir()
    log = out_dir.parent / "logs" / f"build-{target.name}.log"
    out = out_dir / target.name
    tmp = out.with_name(f".{target.name}.tmp")
    cmd = [go, "build", "-trimpath", "-ldflags", target.ldflags, "-o", str(tmp), target.package]
    # Measure with GNU time where present (into its own file, so the log's tail stays the
    # compiler's errors); nice keeps the build from starving the rest of the machine.
    stats = log.with_suffix(".time")
    stats.unlink(missing_ok=True)
    has_time = os.access("/usr/bin/time", os.X_OK)
    wrap = ["/usr/bin/time", "-v", "-o", str(stats)] if has_time else []
    wrap = (["nice", "-n", "10"] if shutil.which("nice") else []) + wrap
    env = dict(os.environ, CGO_ENABLED="0")
    say(f"{step} building {target.name} ({target.package}) ... log: {log}")
    started = time.monotonic()
    with open(log, "w") as fh:
        fh.write(f"$ cd {deploy / target.module} && {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(
            wrap + cmd,
            cwd=deploy / target.module,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    elapsed = time.monotonic() - started
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise SandboxError(
            f"build step {step} {target.name} failed (go build exit {rc} after {elapsed:.0f}s)",
            log_path=log,
        )
    os.replace(tmp, out)
    _stamp_path(target, out_dir).write_text(stamp + "\n")
    say(f"{step} built {target.name} in {elapsed:.0f}s{_peak_rss(stats)}")


def _peak_rss(stats: Path) -> str:
    try:
        text = stats.read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return f", peak RSS {int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else ""
