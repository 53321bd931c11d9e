"""`yolofit sandbox up | down | status | kubeconfig | build`.

`up` records the sandbox it starts as the current one (a symlink
$YOLOFIT_SANDBOX_HOME/current -> its data dir, default ~/.cache/yolofit/sandbox),
so the other subcommands find it without arguments. stdout carries only what
scripts need (the kubeconfig path); progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.paths import sandbox_home


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="local Kubernetes control plane with a simulated GPU fleet",
        description="A real kube-apiserver, etcd, scheduler and controller-manager (built "
        "from source once) plus kwok simulating GPU nodes, on free local ports.",
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)

    up = sub.add_parser("up", help="start a sandbox; prints its kubeconfig path")
    up.add_argument("--fleet", type=Path, help="fleet YAML file (default: deploy/fleet.yaml)")
    up.add_argument("--dir", type=Path, help="new or empty data folder (default: a temp dir)")
    up.add_argument(
        "--apiserver-port",
        type=int,
        default=0,
        help="kube-apiserver port on 127.0.0.1 (default: a free one)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds each component may take to become healthy (default 90)",
    )
    up.add_argument(
        "--with-kueue",
        action="store_true",
        help="also run Kueue (built once from its Go module) with its webhooks, ResourceFlavors "
        "per GPU class and a ClusterQueue + LocalQueue per team of the demo's policy",
    )
    up.set_defaults(func=_up)

    for name, func, help_ in (
        ("down", _down, "stop the sandbox's processes and delete its data"),
        ("status", _status, "show the sandbox's components, PIDs and health"),
        ("kubeconfig", _kubeconfig, "print the sandbox's kubeconfig path"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", type=Path, help="the sandbox's data folder (default: current)")
        p.set_defaults(func=func)

    b = sub.add_parser("build", help="build (or verify) the control-plane binaries in the cache")
    b.add_argument("--with-kueue", action="store_true", help="also build Kueue's manager")
    b.set_defaults(func=_build)


def _usage_error(message: str) -> Exception:
    from yolofit.cli import UsageError  # lazy: yolofit.cli imports this module

    return UsageError(message)


def _current_link() -> Path:
    return sandbox_home() / "current"


def _resolve_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg.expanduser().resolve()
    link = _current_link()
    if not link.is_symlink():
        raise _usage_error(
            "no sandbox is running (start one with `yolofit sandbox up`, or pass --dir)"
        )
    return Path(link.readlink())


def _err(exc: SandboxError) -> int:
    print(f"yolofit sandbox: error: {exc}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    from yolofit.sandbox.sandbox import Sandbox, print_progress

    if args.fleet is not None and not args.fleet.is_file():
        raise _usage_error(f"--fleet {args.fleet}: no such file")
    if not 0 <= args.apiserver_port <= 65535:
        raise _usage_error(f"--apiserver-port {args.apiserver_port}: not a port number")
    link = _current_link()
    if link.is_symlink() and args.dir is None:
        try:
            running = Sandbox.load(link.readlink())
        except SandboxError:
            running = None
        if running is not None and any(p.alive() for p in running.procs):
            print(
                f"yolofit sandbox: already running ({running.dir}); "
                "`yolofit sandbox down` stops it",
                file=sys.stderr,
            )
            print(running.kubeconfig)
            return 0
    try:
        sb = Sandbox.up(
            fleet=args.fleet,
            workdir=args.dir,
            apiserver_port=args.apiserver_port,
            timeout=args.timeout,
            progress=print_progress,
            with_kueue=args.with_kueue,
        )
    except SandboxError as exc:
        return _err(exc)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(sb.dir)
    print(sb.kubeconfig)
    return 0


def _down(args: argparse.Namespace) -> int:
    from yolofit.sandbox.sandbox import Sandbox

    workdir = _resolve_dir(args.dir)
    link = _current_link()
    try:
        sb = Sandbox.load(workdir)
    except SandboxError as exc:
        if args.dir is None and link.is_symlink():  # its data is gone: forget it
            link.unlink()
            print(f"yolofit sandbox: forgot stale sandbox {workdir} ({exc})", file=sys.stderr)
            return 0
        return _err(exc)
    sb.down()
    if link.is_symlink() and Path(link.readlink()) == workdir:
        link.unlink()
    print(f"yolofit sandbox: stopped {len(sb.procs)} processes, removed {sb.dir}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from yolofit.sandbox import components
    from yolofit.sandbox.sandbox import Sandbox

    try:
        sb = Sandbox.load(_resolve_dir(args.dir))
    except SandboxError as exc:
        return _err(exc)
    rows = sb.status()
    problem = components.https_check(sb.pki, sb.ports.apiserver, "/readyz") if rows else "none"
    print(f"sandbox   {sb.dir}")
    print(f"server    {sb.server}  ({'ready' if problem is None else problem})")
    print(f"nodes     {sb.nodes}")
    print(f"kubeconfig {sb.kubeconfig}")
    for r in rows:
        state = "running" if r["running"] else "STOPPED"
        print(f"  {r['name']:<24} pid {r['pid']:<8} {state:<8} {r['log']}")
    return 0 if problem is None and all(r["running"] for r in rows) else 1


def _kubeconfig(args: argparse.Namespace) -> int:
    workdir = _resolve_dir(args.dir)
    path = workdir / "kubeconfig"
    if not path.is_file():
        raise _usage_error(f"no kubeconfig at {path}; is the sandbox running?")
    print(path)
    return 0


def _build(args: argparse.Namespace) -> int:
    from yolofit.sandbox.build import ensure_built
    from yolofit.sandbox.sandbox import print_progress

    try:
        bins = ensure_built(print_progress)
        if args.with_kueue:
            from yolofit.sandbox import kueue

            bins["kueue"] = kueue.ensure_built(print_progress)
    except SandboxError as exc:
        return _err(exc)
    for name, path in bins.items():
        print(f"{name}\t{path}")
    return 0
