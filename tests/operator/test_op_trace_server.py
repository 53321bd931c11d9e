"""Trace workers fork from a server that has imported the builder's modules
(yolofit.estimator.trace_worker.start_server). The preload tests run in a fresh Python each:
the forkserver is one per process, so the pytest process's own (started by earlier tests)
would hide the preload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolofit.estimator.trace_worker import preload_modules

HERE = Path(__file__).parent
SCRIPT = """
import json, os, signal, sys
from multiprocessing import forkserver
from yolofit.estimator import trace_worker as tw
from yolofit.estimator.build import key_for
if __name__ == "__main__":
    started = tw.start_server("preloadprobe:probe")
    key = key_for("yolov8n", 64).to_dict()
    out = [tw.trace_in_worker("preloadprobe:probe", key, timeout=60)]
    server = forkserver._forkserver._forkserver_pid
    stopped = None
    if sys.argv[1] == "kill-server":  # as the OOM killer would
        os.kill(server, signal.SIGKILL)
    if sys.argv[1] == "stop-server":  # a replica that stops leading
        stopped = tw.stop_server()
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            stopped = stopped and "gone"
    out.append(tw.trace_in_worker("preloadprobe:probe", key, timeout=60))
    print(json.dumps({"started": started, "me": os.getpid(), "runs": out, "stopped": stopped,
                      "again": tw.stop_server() and tw.stop_server()}))
"""


def run(mode: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_workers_fork_from_a_server_that_imported_the_builders_modules() -> None:
    out = run("server")
    assert out["started"] is True
    runs = out["runs"]
    assert isinstance(runs, list) and len(runs) == 2
    for r in runs:  # imported before the builder ran, in a process that is not the caller
        assert r["preloaded"] is True and r["model"] == "yolov8n"
        assert r["ppid"] != out["me"]
    assert runs[0]["pid"] != runs[1]["pid"]  # a fresh worker per trace
    assert runs[0]["ppid"] == runs[1]["ppid"]  # ... forked from the same server


def test_a_killed_server_is_started_again_by_the_next_trace() -> None:
    runs = run("kill-server")["runs"]
    assert isinstance(runs, list)
    assert runs[1]["preloaded"] is True and runs[1]["ppid"] != runs[0]["ppid"]


def test_a_stopped_server_is_gone_and_the_next_trace_starts_another() -> None:
    out = run("stop-server")
    assert out["stopped"] == "gone"  # its process exited (its memory is back)
    runs = out["runs"]
    assert isinstance(runs, list)
    assert runs[1]["preloaded"] is True and runs[1]["ppid"] != runs[0]["ppid"]
    assert out["again"] is False  # stopping twice: the second finds none


def test_a_replica_that_stops_leading_stops_its_server_once_its_traces_end(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not under a running trace (its exit status travels through the server), and not
    when the replica leads again first."""
    import asyncio

    from yolofit.estimator import trace_worker
    from yolofit.operator.handlers import Operator
    from yolofit.operator.settings import OperatorSettings

    op = Operator(OperatorSettings(profile_dir=tmp_path))
    stops: list[int] = []
    busy = [True]
    monkeypatch.setattr(trace_worker, "stop_server", lambda: stops.append(1) or True)
    monkeypatch.setattr(op.profiler, "busy", lambda: busy[0])

    async def main() -> None:
        op.leading = False
        task = asyncio.create_task(op._stop_trace_server(poll=0.01))
        await asyncio.sleep(0.1)
        assert stops == []  # a trace it started while leading still runs
        busy[0] = False
        await asyncio.wait_for(task, 5)
        assert stops == [1]
        busy[0] = True
        task = asyncio.create_task(op._stop_trace_server(poll=0.01))
        await asyncio.sleep(0.1)
        op.leading, busy[0] = True, False  # leads again before its trace ended
        await asyncio.wait_for(task, 5)
        assert stops == [1]

    asyncio.run(main())


def test_the_real_builder_preloads_the_tracer_and_what_it_imports() -> None:
    modules = preload_modules("yolofit.estimator.build:build_profile")
    assert modules[0] == "yolofit.estimator.build"
    assert {"yolofit.estimator.tracer", "ultralytics.nn.tasks", "torch._dynamo"} <= set(modules)
    assert preload_modules("preloadprobe:probe") == ["preloadprobe", "xml.dom.minidom"]


def test_a_builder_that_does_not_import_fails_its_trace_with_the_reason() -> None:
    """Not the operator's startup: the server still starts, and each trace says why."""
    from yolofit.estimator.build import key_for
    from yolofit.estimator.trace_worker import TraceFailed, start_server, trace_in_worker

    assert preload_modules("no_such_module:build") == ["no_such_module"]
    start_server("no_such_module:build")
    with pytest.raises(TraceFailed, match="ModuleNotFoundError: No module named 'no_such_module'"):
        trace_in_worker("no_such_module:build", key_for("yolov8n", 64).to_dict(), timeout=60)
