"""Start, watch and stop the sandbox's processes, and pick the ports they listen on.

A started process is recorded as (pid, start time); `stop` signals a PID only while
/proc still shows the same start time, so a recycled PID is never killed.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofit.sandbox.errors import SandboxError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str) -> None:
    """Raise a one-line SandboxError when `port` on 127.0.0.1 is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SandboxError(
                    f"port {port} on 127.0.0.1 for {what} is busy (another process listens "
                    "there); pick another port or leave it to the sandbox (0)"
                ) from None
            raise


def _start_time(pid: int) -> int | None:
    """Clock ticks since boot at which `pid` started, or None if it is gone/a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Proc:
    """A process the sandbox started: enough to find it again from another process."""

    name: str
    pid: int
    start_time: int
    log: str
    argv: list[str]

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_time": self.start_time,
            "log": self.log,
            "argv": self.argv,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Proc:
        return cls(
            name=str(d["name"]),
            pid=int(d["pid"]),
            start_time=int(d["start_time"]),
            log=str(d["log"]),
            argv=[str(a) for a in d["argv"]],
        )


# Popen handles of processes started by this Python process, so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Proc:
    """Start `argv` in its own session (so Ctrl-C in a terminal does not reach it),
    output appended to `log`."""
    with open(log, "ab") as fh:
        fh.write(f"$ {' '.join(argv)}\n".encode())
        fh.flush()
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
                preexec_fn=preexec_fn,
            )
        except OSError as exc:
            raise SandboxError(f"{name}: cannot start {argv[0]}: {exc.strerror}") from None
    _children[popen.pid] = popen
    started = _start_time(popen.pid)
    if started is None:  # exited already; report it through the normal health path
        started = -1
    return Proc(name, popen.pid, started, str(log), list(argv))


def exit_code(proc: Proc) -> int | None:
    """The exit status if this process started `proc` and it has exited."""
    popen = _children.get(proc.pid)
    return popen.poll() if popen is not None else None


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only while the PID is still ours."""
    popen = _children.get(proc.pid)
    if popen is not None and _start_time(proc.pid) in (proc.start_time, None):
        del _children[proc.pid]
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)
        return
    if not proc.alive():
        return
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return
        time.sleep(0.05)
    if proc.alive():
        os.kill(proc.pid, signal.SIGKILL)


def wait_healthy(
    proc: Proc, check: Callable[[], str | None], timeout: float, what: str | None = None
) -> None:
    """Poll `check` (None = healthy, else a short reason) until healthy, the process
    exits, or `timeout` passes; the latter two raise with the log's tail."""
    what = what or proc.name
    deadline = time.monotonic() + timeout
    reason = "no answer yet"
    while True:
        if not proc.alive():
            code = exit_code(proc)
            raise SandboxError(
                f"{what} exited{f' with code {code}' if code is not None else ''}"
                f" while starting{_port_hint(Path(proc.log))}",
                log_path=Path(proc.log),
            )
        reason = check() or ""
        if not reason:
            return
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{what} not healthy after {timeout:g}s ({reason}){_port_hint(Path(proc.log))}",
                log_path=Path(proc.log),
            )
        time.sleep(0.2)


def _port_hint(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")[-20000:]
    except OSError:
        return ""
    if "address already in use" in text:
        return ": a port it needs is busy (address already in use)"
    return ""
