"""Run one profile trace in its own process, under a host-memory budget.

A trace is one CPU training step of a model; a large model at a high resolution can need
more memory than the process that asked for it may use (the operator's container limit).
Each trace therefore runs in a fresh spawned worker whose resident memory a watchdog thread
reads every `poll` seconds (/proc/<pid>/status VmRSS): above the budget the worker is
SIGKILLed and the caller gets `TraceFailed` naming the model, the size and the budget. A
worker killed from outside (the kernel's OOM killer, a person) is reported the same way.
Nothing outlives a trace, so one killed trace never breaks the next one (the process pool
this replaces died with its worker and failed every later trace).

Workers are forked from a forkserver (where the platform has one; else spawned) that has
imported the builder's module and what it names in `TRACE_PRELOAD` (the tracer: torch,
Ultralytics, torch._dynamo, which torch's meta kernels import on first use): a fresh worker
then starts in milliseconds instead of importing them again, ~8 s of a yolo11n@640 first
estimate on 2 cores (benchmarks/RESULTS.md). The server holds no trace state: each worker
is a fresh fork of a process that has only imported modules. `start_server` starts it
ahead of the first trace (the operator's leading replica does); otherwise the first trace
does.

The budget is one number the chart and the operator share (`profiling.memoryBudgetMiB` in
the chart sets both the operator's `trace_memory_budget` and its container's memory limit,
budget plus the operator's own share), and `--memory-budget` of `yolofit estimate`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from yolofit.units import format_bytes

POLL_SECONDS = 0.05


class TraceFailed(RuntimeError):
    """The trace did not produce a profile; the message says why, for a job's status."""


def limit_heap_retention() -> None:
    """Ask glibc to serve blocks of 128 KiB and more with mmap and to return freed memory at
    once, so the process's resident memory follows the live tensors rather than the largest
    heap it ever had (the loss's temporaries of one batch point otherwise stay resident
    into the next). No effect where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 128 * 1024)
    mallopt(m_trim_threshold, 128 * 1024)


def _child(builder: str, key_dict: dict[str, Any], conn: Connection) -> None:
    limit_heap_retention()
    try:
        from yolofit.estimator.profile import Profile, ProfileKey

        module, _, name = builder.partition(":")
        fn = getattr(importlib.import_module(module), name)
        profile = fn(ProfileKey.from_dict(key_dict))
        data = profile.to_dict() if isinstance(profile, Profile) else dict(profile)
        conn.send(("ok", data, _own_peak()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit 1
        conn.send(("error", f"{type(exc).__name__}: {exc}",
                   traceback.format_exc(limit=-3)))
    finally:
        conn.close()


def _own_peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def describe(key_dict: dict[str, Any]) -> str:
    """yolo11x@1280 (the words a job's status uses for a trace)."""
    return f"{key_dict.get('model', '?')}@{key_dict.get('imgsz', '?')}"


def preload_modules(builder: str) -> list[str]:
    """The modules a worker of `builder` (module:function) imports: the module, and those
    it lists in TRACE_PRELOAD (imported lazily there, to keep the module itself light)."""
    module = builder.partition(":")[0]
    try:
        extra = getattr(importlib.import_module(module), "TRACE_PRELOAD", ())
    except Exception:  # noqa: BLE001 - a bad builder fails its traces, with the reason
        extra = ()
    return [module, *extra]


def _context(builder: str) -> Any:
    """forkserver (no copy of the caller's threads, imports done once), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload_modules(builder))  # read when the server starts
    return ctx


def start_server(builder: str) -> bool:
    """Start the process workers fork from, importing `builder`'s modules in it now (in the
    background: this returns at once); False where workers are spawned instead."""
    if _context(builder).get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


def stop_server() -> bool:
    """Stop the server workers fork from, if one runs (its ~700 MiB go back; running workers
    are not its children's business: they finish and report). The next start_server or
    trace starts a new one. multiprocessing has no public stop: its own tests use the
    forkserver's `_stop`; where that is missing, the server stays (False)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the module's singleton
    stop = getattr(server, "_stop", None)
    if stop is None or getattr(server, "_forkserver_pid", None) is None:
        return False
    stop()
    return True


def _start(ctx: Any, builder: str, key_dict: dict[str, Any], conn: Connection,
           attempts: int = 3) -> Any:
    """Start the worker. A server that died (the OOM killer) just before can still look
    alive to the request, which then fails; the next attempt starts a new server."""
    error: Exception | None = None
    for _ in range(attempts):
        process = ctx.Process(target=_child, args=(builder, key_dict, conn),
                              name=f"yolofit-trace {describe(key_dict)}", daemon=True)
        try:
            process.start()
            return process
        except (EOFError, ConnectionError) as exc:
            error = exc
            time.sleep(0.2)
    raise TraceFailed(f"could not start a trace worker for {describe(key_dict)}: "
                      f"{type(error).__name__}: {error}") from error


class TraceRun:
    """One worker process running `builder(ProfileKey)`; `wait()` returns the profile as a
    dict or raises TraceFailed. `kill()` may be called from any thread."""

    def __init__(self, builder: str, key_dict: dict[str, Any],
                 budget_bytes: int | None = None) -> None:
        ctx = _context(builder)
        self.key_dict, self.budget = key_dict, budget_bytes
        self._conn, child = ctx.Pipe(duplex=False)
        try:
            self.process = _start(ctx, builder, key_dict, child)
        finally:
            child.close()
        self.peak_rss = 0
        self.over_budget = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None,
             poll: float = POLL_SECONDS) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        message = None
        while message is None:
            if self._conn.poll(poll):
                try:
                    message = self._conn.recv()
                except EOFError:  # the worker died before it could say anything
                    break
                continue
            self._watch()
            if not self.process.is_alive() and not self._conn.poll(0):
                break
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                self.process.join()
                raise TraceFailed(f"trace of {describe(self.key_dict)} took longer than "
                                  f"{timeout:.0f} s and was stopped")
        self.process.join()
        self._conn.close()
        return self._result(message)

    def _watch(self) -> None:
        rss = rss_bytes(self.pid)
        self.peak_rss = max(self.peak_rss, rss)
        if self.budget is not None and rss > self.budget:
            self.over_budget = True
            self.kill()

    def _result(self, message: Any) -> dict[str, Any]:
        what = describe(self.key_dict)
        if message is not None and message[0] == "ok":
            self.peak_rss = max(self.peak_rss, int(message[2]))
            return dict(message[1])
        if message is not None:
            raise TraceFailed(f"trace of {what} failed: {message[1]}")
        code = self.process.exitcode
        budget = (f"memory budget {format_bytes(self.budget)}" if self.budget is not None
                  else "no memory budget set")
        if self.over_budget:
            raise TraceFailed(f"trace of {what} was killed ({budget}: it reached "
                              f"{format_bytes(self.peak_rss)})")
        if code is None or code >= 0:
            raise TraceFailed(f"trace of {what} ended without a profile (exit code {code})")
        raise TraceFailed(f"trace of {what} was killed ({signal.Signals(-code).name}, "
                          f"{budget}; the container's memory limit or the OOM killer)")


def trace_in_worker(builder: str, key_dict: dict[str, Any], budget_bytes: int | None = None,
                    timeout: float | None = None,
                    started: Callable[[TraceRun], None] | None = None) -> dict[str, Any]:
    """Run `builder` (module:function) on the key in a fresh worker under the budget."""
    run = TraceRun(builder, key_dict, budget_bytes)
    if started is not None:
        started(run)
    return run.wait(timeout)


__all__ = ["TraceFailed", "TraceRun", "limit_heap_retention", "preload_modules", "rss_bytes",
           "stop_server",
           "start_server", "trace_in_worker"]
