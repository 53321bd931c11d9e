"""`Sandbox`: one local control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok) with a simulated GPU fleet, in its own temp directory and ports.

    sb = Sandbox.up()            # builds binaries on first use, waits until healthy
    sb.kubeconfig                # admin kubeconfig path
    sb.down()                    # stops exactly the PIDs it started, removes its data

Everything about a running sandbox is in <dir>/state.json, so another process (the
CLI's `down`/`status`) can find and stop it with `Sandbox.load(dir)`.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolofit.sandbox import build, components, dra, processes
from yolofit.sandbox.components import ORDER, Ports
from yolofit.sandbox.credentials import Pki, write_pki
from yolofit.sandbox.errors import SandboxError
from yolofit.sandbox.fleet import (
    Fleet,
    create_nodes,
    default_fleet_path,
    fleet_nodes,
    load_fleet,
    wait_nodes_ready,
)
from yolofit.sandbox.paths import deploy_dir
from yolofit.sandbox.pki import CertKey, issue_cert, load_cert_key
from yolofit.sandbox.processes import Proc

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

STATE_FILE = "state.json"
_STATE_VERSION = 1
Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the Python process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Sandbox:
    """A started (or loaded) sandbox. Create with `Sandbox.up()` or `Sandbox.load()`."""

    dir: Path
    ports: Ports
    procs: list[Proc] = field(default_factory=list)
    nodes: int = 0
    started_at: float = 0.0

    # ---- what clients need ----
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def pki(self) -> Pki:
        return Pki(self.pki_dir)

    @property
    def ca_file(self) -> Path:
        """The CA that signed the apiserver's certificate and all client certificates."""
        return self.pki.ca_cert

    def ca(self) -> CertKey:
        """The sandbox CA with its key, to sign more certificates."""
        return load_cert_key(self.pki.ca_cert, self.pki.ca_key)

    def issue_cert(self, common_name: str, **kwargs: Any) -> CertKey:
        """A certificate signed by the sandbox CA (see `pki.issue_cert` for kwargs)."""
        return issue_cert(self.ca(), common_name, **kwargs)

    def api_client(self) -> ApiClient:
        """A kubernetes ApiClient authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    # ---- lifecycle ----
    @classmethod
    def up(
        cls,
        fleet: Fleet | str | Path | None = None,
        workdir: str | Path | None = None,
        *,
        apiserver_port: int = 0,
        timeout: float = 90.0,
        ephemeral: bool = False,
        progress: Progress | None = None,
        with_kueue: bool = False,
    ) -> Sandbox:
        """Build (if needed), start every component, create the fleet, wait until ready.

        fleet: a Fleet, a fleet YAML path, or None for deploy/fleet.yaml.
        workdir: a new or empty folder for the data (default: a fresh temp dir);
            `down` removes it.
        ephemeral: tie the components' lives to this Python process (test fixtures):
            they get SIGTERM when the calling thread exits, and `down` runs at
            interpreter exit. Call from the main thread (or a thread that outlives them).
        timeout: seconds each component may take to become healthy.
        with_kueue: also run Kueue (built once from deploy/kueue) with its webhooks, and
            its flavors and queues for the demo's policy (see sandbox/kueue.py).
        """
        say = progress or _quiet
        fleet_obj = fleet if isinstance(fleet, Fleet) else load_fleet(fleet or default_fleet_path())
        stages = deploy_dir() / "kwok-stages.yaml"
        if apiserver_port:
            processes.check_port_free(apiserver_port, "kube-apiserver")
        bins = build.ensure_built(say)
        sb = cls(dir=_make_dir(workdir), ports=_pick_ports(apiserver_port), started_at=time.time())
        if ephemeral:
            atexit.register(sb.down)
        try:
            sb._start(bins, stages, fleet_obj, timeout, ephemeral, say)
            if with_kueue:
                sb._start_kueue(fleet_obj, timeout, ephemeral, say)
        except BaseException as exc:
            sb._stop_all()
            sb._save()
            atexit.unregister(sb.down)  # keep the logs the error points at
            if isinstance(exc, SandboxError):
                exc.reason += (
                    f" [data kept in {sb.dir} for inspection; "
                    f"`yolofit sandbox down --dir {sb.dir}` removes it]"
                )
            raise
        say(
            f"sandbox ready in {time.time() - sb.started_at:.1f}s: {sb.server}, "
            f"{sb.nodes} nodes, data in {sb.dir}"
        )
        return sb

    def _start(
        self,
        bins: dict[str, Path],
        stages: Path,
        fleet: Fleet,
        timeout: float,
        ephemeral: bool,
        say: Progress,
    ) -> None:
        pki = write_pki(self.pki_dir, self.server)
        shutil.copyfile(pki.kubeconfig("admin"), self.kubeconfig)
        os.chmod(self.kubeconfig, 0o600)
        (self.dir / "logs").mkdir()
        p = self.ports
        argvs = {
            "etcd": components.etcd_argv(bins["etcd"], self.dir / "etcd", p),
            "kube-apiserver": components.apiserver_argv(bins["kube-apiserver"], pki, p),
            "kube-controller-manager": components.controller_manager_argv(
                bins["kube-controller-manager"], pki, p
            ),
            "kube-scheduler": components.scheduler_argv(bins["kube-scheduler"], pki, p),
            "kwok": components.kwok_argv(bins["kwok"], pki, p, stages),
        }
        checks: dict[str, Callable[[], str | None]] = {
            "etcd": lambda: components.http_check(p.etcd_client, "/health"),
            "kube-apiserver": lambda: components.https_check(pki, p.apiserver, "/readyz"),
            "kube-controller-manager": lambda: components.https_check(
                pki, p.controller_manager, "/healthz", client=None
            ),
            "kube-scheduler": lambda: components.https_check(
                pki, p.scheduler, "/healthz", client=None
            ),
            "kwok": lambda: components.http_check(p.kwok, "/healthz"),
        }
        # HOME points into the sandbox so kwok does not pick up ~/.kwok/kwok.yaml.
        env = dict(os.environ, HOME=str(self.dir))
        preexec = _die_with_parent if ephemeral else None
        for group in (
            ("etcd",),
            ("kube-apiserver",),
            ("kube-controller-manager", "kube-scheduler", "kwok"),
        ):
            started = []
            for name in group:
                say(f"starting {name} (log: {self.dir / 'logs' / name}.log)")
                proc = processes.start(
                    name,
                    argvs[name],
                    self.dir / "logs" / f"{name}.log",
                    env=env,
                    preexec_fn=preexec,
                )
                self.procs.append(proc)
                started.append(proc)
                self._save()
            for proc in started:
                processes.wait_healthy(proc, checks[proc.name], timeout)
        self._create_fleet(fleet, timeout, say)

    def _create_fleet(self, fleet: Fleet, timeout: float, say: Progress) -> None:
        nodes = fleet_nodes(fleet)
        client = self.api_client()
        try:
            t0 = time.monotonic()
            create_nodes(client, nodes)
            dra.publish(client, dra.device_classes() + dra.resource_slices(fleet))
            self.nodes = len(nodes)
            self._save()
            say(
                f"created {len(nodes)} GPU nodes in {time.monotonic() - t0:.1f}s; "
                "waiting for kwok to mark them Ready"
            )
            try:
                wait_nodes_ready(client, [n["metadata"]["name"] for n in nodes], timeout)
            except SandboxError as exc:
                kwok = next(p for p in self.procs if p.name == "kwok")
                raise SandboxError(exc.reason, log_path=Path(kwok.log)) from None
            _wait_default_service_account(client, timeout, self._proc("kube-controller-manager"))
        finally:
            client.close()

    def _start_kueue(self, fleet: Fleet, timeout: float, ephemeral: bool, say: Progress) -> None:
        from yolofit.sandbox import kueue

        kq = kueue.start_kueue(self.dir, self.pki, self.server, say, timeout=max(timeout, 120.0),
                               preexec_fn=_die_with_parent if ephemeral else None)
        self.procs.append(kq.proc)
        self._save()
        made = kueue.install_policy_queues(kq, deploy_dir() / "examples" / "policy.yaml",
                                           fleet_nodes(fleet))
        say(f"kueue: applied {', '.join(made)}")

    def _proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def down(self) -> None:
        """Stop the components this sandbox started (by PID) and remove its data."""
        atexit.unregister(self.down)
        self._stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_all(self) -> None:
        for proc in sorted(self.procs, key=lambda p: -ORDER.index(p.name)):
            processes.stop(proc)

    def status(self) -> list[dict[str, Any]]:
        """One row per component: name, pid, running, log."""
        return [
            {"name": p.name, "pid": p.pid, "running": p.alive(), "log": p.log} for p in self.procs
        ]

    # ---- state on disk ----
    def _save(self) -> None:
        state = {
            "version": _STATE_VERSION,
            "dir": str(self.dir),
            "ports": self.ports.to_dict(),
            "procs": [p.to_dict() for p in self.procs],
            "nodes": self.nodes,
            "started_at": self.started_at,
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
        }
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.dir / STATE_FILE)

    @classmethod
    def load(cls, workdir: str | Path) -> Sandbox:
        """The sandbox whose state is in `workdir` (started by any process)."""
        path = Path(workdir) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SandboxError(f"no sandbox state at {path}: {exc}") from None
        return cls(
            dir=Path(state["dir"]),
            ports=Ports(**state["ports"]),
            procs=[Proc.from_dict(p) for p in state["procs"]],
            nodes=state["nodes"],
            started_at=state["started_at"],
        )


def _make_dir(workdir: str | Path | None) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="yolofit-sandbox-"))
    path = Path(workdir).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SandboxError(f"--dir {path} must be a new or empty folder (`down` deletes it)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pick_ports(apiserver_port: int) -> Ports:
    return Ports(
        etcd_client=processes.free_port(),
        etcd_peer=processes.free_port(),
        apiserver=apiserver_port or processes.free_port(),
        controller_manager=processes.free_port(),
        scheduler=processes.free_port(),
        kwok=processes.free_port(),
    )


def _wait_default_service_account(client: ApiClient, timeout: float, kcm: Proc) -> None:
    """Pods are rejected until their namespace's `default` ServiceAccount exists; the
    controller-manager creates it a moment after start."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    core = CoreV1Api(client)
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", "default")
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            raise SandboxError(
                "kube-controller-manager did not create the default "
                f"ServiceAccount within {timeout:g}s",
                log_path=Path(kcm.log),
            )
        time.sleep(0.2)


def print_progress(msg: str) -> None:
    print(f"yolofit sandbox: {msg}", file=sys.stderr, flush=True)
