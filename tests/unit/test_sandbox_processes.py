"""Process handling: busy ports, components that die or never get healthy (a
one-line reason plus the log's tail, never a hang), and stopping only our PIDs."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from yolofit.sandbox import processes
from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.processes import Proc


def test_busy_port_is_reported_by_number() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(
            SandboxError, match=f"port {port} on 127.0.0.1 for kube-apiserver is busy"
        ):
            processes.check_port_free(port, "kube-apiserver")
    processes.check_port_free(processes.free_port(), "x")


def test_component_that_exits_reports_code_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "etcd.log"
    proc = processes.start(
        "etcd",
        [
            sys.executable,
            "-c",
            "print('listen tcp 127.0.0.1:2379: bind: address already in use'); raise SystemExit(3)",
        ],
        log,
    )
    with pytest.raises(SandboxError) as err:
        processes.wait_healthy(proc, lambda: "not yet", timeout=30)
    text = str(err.value)
    first = text.splitlines()[0]
    assert first == (
        "etcd exited with code 3 while starting: a port it needs is busy (address already in use)"
    )
    assert f"--- last lines of {log} ---" in text
    assert "bind: address already in use" in text


def test_component_not_healthy_in_time_times_out(tmp_path: Path) -> None:
    proc = processes.start(
        "kube-apiserver",
        [sys.executable, "-c", "print('still starting', flush=True); import time; time.sleep(60)"],
        tmp_path / "a.log",
    )
    try:
        with pytest.raises(SandboxError) as err:
            processes.wait_healthy(proc, lambda: "GET /readyz: HTTP 500", timeout=1)
        # It gave up on its own timeout, not by waiting for the process (which sleeps 60 s).
        assert proc.alive()
        assert str(err.value).startswith(
            "kube-apiserver not healthy after 1s (GET /readyz: HTTP 500)\n"
        )
        assert "still starting" in err.value.log_tail
    finally:
        processes.stop(proc)
    assert not proc.alive()


def test_stop_spares_a_recycled_pid(tmp_path: Path) -> None:
    proc = processes.start(
        "x", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "x.log"
    )
    # The same PID with another start time is someone else's process: left alone.
    stranger = Proc.from_dict(proc.to_dict() | {"start_time": proc.start_time + 1})
    assert not stranger.alive()
    processes.stop(stranger)
    assert proc.alive()
    # A Proc loaded from state in another process is stopped by PID (SIGTERM).
    loaded = Proc.from_dict(proc.to_dict())
    popen = processes._children.pop(proc.pid)  # forget the Popen, as the CLI's `down` would
    processes.stop(loaded)
    assert not loaded.alive()
    assert popen.wait(5) == -15
