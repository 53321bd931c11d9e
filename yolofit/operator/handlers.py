"""kopf wiring: watches feed the in-memory World and trigger reconcile passes; startup
primes the World with LISTs (so a restarted operator knows every admitted job before it
admits another); background loops retry Queued/Profiling jobs, resync everything, re-list
(pruning what was deleted unseen), refresh the fleet and publish gauges. With peering, the
loops act only while this replica leads (leadership.py), and a new leader re-lists first.
No decisions here: see reconcile.py and the pure modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
from collections import Counter
from typing import Any, cast

import kopf

from yolofit.estimator import trace_worker
from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator import (
    admission_server,
    events,
    feedback,
    kube,
    kueue,
    leadership,
    metrics,
    ownership,
    webhook_config,
    webhooks,
)
from yolofit.operator import policy as pol
from yolofit.operator.api import GROUP, TERMINAL_PHASES, VERSION, GPUCapacityPolicySpec
from yolofit.operator.certs import ensure_certs, service_names
from yolofit.operator.fleet import PRODUCT, node_from_object
from yolofit.operator.launch import JOB_LABEL
from yolofit.operator.profiling import Profiler
from yolofit.operator.reconcile import Reconciler
from yolofit.operator.settings import OperatorSettings
from yolofit.operator.sharing.report import memory_samples
from yolofit.operator.state import Key, World, merge_listing
from yolofit.operator.state import rv as _rv
from yolofit.operator.state import uid as _uid

log = logging.getLogger("yolofit.operator")
JOBS = (GROUP, VERSION, "yolotrainingjobs")
POLICIES = (GROUP, VERSION, "gpucapacitypolicies")


class Operator:
    """Everything one operator process holds; `registry` is what kopf runs."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.world = World(store=ProfileStore(settings.profile_dir))
        self.registry = kopf.OperatorRegistry()
        self.api: kube.Kube | None = None
        self.post_event = events.Poster(None, os.environ.get("POD_NAME", ""))
        self.reconciler: Reconciler | None = None
        self.profiler = Profiler(self.world.store, settings.profile_builder, self._profiled,
                                 workers=settings.trace_workers,
                                 budget_bytes=settings.trace_memory_budget_bytes,
                                 timeout=settings.trace_timeout)
        self.tasks: list[asyncio.Task[None]] = []
        self.admission: admission_server.AdmissionServer | None = None
        self._raw_policy: GPUCapacityPolicySpec | None = None
        self._published: tuple[Any, ...] = ()
        # kopf's peering identity, ours to pass (so that we can tell our entry from others').
        self.identity = (f"{os.environ.get('POD_NAME') or socket.gethostname()}/"
                         f"{os.getpid()}/{secrets.token_hex(3)}")
        self.priority = 0
        self.leading = not settings.peering  # standalone: always
        self._relist_lock = asyncio.Lock()
        self._register()

    # --- wiring -----------------------------------------------------------------------------

    def _register(self) -> None:
        r = self.registry
        kopf.on.login(registry=r)(_login)
        kopf.on.startup(registry=r)(self._startup)
        kopf.on.cleanup(registry=r)(self._cleanup)
        # kopf's protocols type every kwarg; ours take the few they use.
        kopf.on.event(*JOBS, registry=r)(cast(Any, self._on_job))
        kopf.on.event("v1", "pods", labels={JOB_LABEL: kopf.PRESENT},
                      registry=r)(cast(Any, self._on_pod))
        kopf.on.event(*POLICIES, registry=r)(cast(Any, self._on_policy))
        # Kueue's Workloads, where Kueue is installed (kopf waits for the CRD otherwise).
        kopf.on.event(*kueue.WORKLOADS, registry=r)(cast(Any, self._on_workload))
        kopf.on.event("v1", "services", labels={JOB_LABEL: kopf.PRESENT},
                      registry=r)(cast(Any, self._on_service))

    async def _startup(self, settings: kopf.OperatorSettings, **_: Any) -> None:
        s = self.settings
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.execution.max_workers = s.api_workers
        if s.peering:
            settings.peering.name, settings.peering.mandatory = s.peering, True
            # kopf keeps every replica of equal priority active; give each its own.
            settings.peering.priority = (s.peering_priority if s.peering_priority is not None
                                         else peering_priority(os.environ.get("POD_NAME", "")))
            settings.peering.lifetime = s.peering_lifetime
            self.priority = settings.peering.priority
        else:
            settings.peering.standalone = True
        self.api = kube.Kube(kube.load_config(s.kubeconfig), s.api_workers)
        self.set_policy(None)
        self.post_event.api = self.api
        self.reconciler = Reconciler(self.world, self.api, self.post_event, self.profiler.start,
                                     s.trainer_metrics_port, self.profiler.ahead)
        self.reconciler.settings_ns = s.operator_namespace
        self.reconciler.monitoring_namespace = s.monitoring_namespace
        self.reconciler.settings_cm = s.margins_configmap
        if s.gang_scheduling == "auto":
            await self.reconciler.gangs.discover()
        log.info("gang placement: %s", "PodGroup (scheduling.k8s.io/v1beta1)"
                 if self.world.pod_groups else "scheduling gates + placement check")
        await self._prime()
        if self.leading:  # standalone; with peering, when this replica comes to lead
            await self._start_trace_server()
        if s.install_webhooks:
            await self._start_admission()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._every(s.queue_interval, self._retry_waiting)),
                      loop.create_task(self._every(s.resync_interval, self._resync)),
                      loop.create_task(self._every(s.relist_interval, self._relist)),
                      loop.create_task(self._every(s.fleet_interval, self._refresh_fleet)),
                      loop.create_task(self._every(5.0, self._gauges)),
                      loop.create_task(self._every(1.0, self._publish_if_changed))]
        if s.peering:
            self.tasks.append(loop.create_task(self._every(1.0, self._lead)))
        self.world.ready = True

    # --- admission --------------------------------------------------------------------------

    def snapshot(self) -> webhooks.Snapshot:
        w = self.world
        return webhooks.Snapshot(policy=w.policy, classes=w.classes, store=w.store,
                                 margins=w.margin_values())

    async def _publish_if_changed(self) -> None:
        """Publish a new snapshot when the policy, fleet or margins changed (margins change in
        the reconciler; policy and fleet also publish at once where they change)."""
        w = self.world
        key = (w.policy, w.classes, tuple(sorted(w.margin_values().items())))
        last = self._published
        if self.admission is not None and (not last or key[0] is not last[0]
                                           or key[1] is not last[1] or key[2] != last[2]):
            self._published = key
            self.admission.publish(self.snapshot())

    def _publish(self) -> None:
        if self.admission is not None:
            self.admission.publish(self.snapshot())

    def set_policy(self, spec: GPUCapacityPolicySpec | None) -> None:
        """The policy object's spec (None: deleted or absent) with the operator's default
        rule for namespaces it does not name: a deleted policy fails closed, to the
        defaults, never to unlimited."""
        self._raw_policy = spec
        s = self.settings
        default = pol.default_rule(s.default_max_gpus_per_job, s.default_max_gpus_admitted)
        self.world.set_policy(spec)
        self.world.policy = pol.with_default_rule(self.world.policy, default)
        self._publish()

    async def _start_admission(self) -> None:
        """Serve the webhooks from their own thread and loop; register them (sandbox)."""
        s = self.settings
        names = [s.webhook_host, "localhost", "127.0.0.1",
                 *service_names(s.webhook_service, s.operator_namespace)]
        certs = ensure_certs(s.cert_dir, list(dict.fromkeys(names)))
        self.admission = admission_server.AdmissionServer(
            self.snapshot(), s.webhook_addr, s.webhook_port, certs.certfile, certs.pkeyfile)
        await asyncio.get_running_loop().run_in_executor(None, self.admission.start)
        if not s.manage_webhook_configurations or self.api is None:
            return
        service = ({"namespace": s.operator_namespace, "name": s.webhook_service, "port": 443}
                   if s.webhook_mode == "service" else None)
        mutating, validating = webhook_config.webhook_configurations(
            s.webhook_configuration, certs.ca_pem, service=service,
            url=f"https://{s.webhook_host}:{s.webhook_port}",
            operator_username=s.operator_username)
        user = s.operator_username or await self._whoami()
        vap, binding = webhook_config.status_policy(f"{s.webhook_configuration}-status", user)
        await webhook_config.apply(self.api, [vap, binding, mutating, validating])
        log.info("registered the admission webhooks and the status policy (status writable "
                 "by %s only)", user)

    async def _whoami(self) -> str:
        assert self.api is not None
        review = await self.api.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                     {"apiVersion": "authentication.k8s.io/v1",
                                      "kind": "SelfSubjectReview"})
        return str(review["status"]["userInfo"]["username"])

    async def _cleanup(self, **_: Any) -> None:
        for t in self.tasks:
            t.cancel()
        if self.admission is not None:
            self.admission.stop()
        self.profiler.shutdown()
        if self.api is not None:
            await self.api.close()

    # --- priming & loops --------------------------------------------------------------------

    async def _prime(self) -> None:
        await self._relist()
        for ns in self.settings.namespaces or [""]:
            await self._prime_workloads(ns)
        await self._refresh_fleet()

    async def _list(self, path: str, query: list[tuple[str, str]] | None = None
                    ) -> tuple[list[dict[str, Any]], int]:
        """All items of every served namespace, and the smallest list resourceVersion."""
        assert self.api is not None
        items: list[dict[str, Any]] = []
        rvs: list[int] = []
        for ns in self.settings.namespaces or [""]:
            base, _, rest = path.partition("{ns}")
            got = await self.api.get(base + (f"namespaces/{ns}/" if ns else "") + rest,
                                     query=query) or {"items": []}
            items.extend(got.get("items") or [])
            try:
                rvs.append(int(got.get("metadata", {}).get("resourceVersion", 0)))
            except ValueError:
                rvs.append(0)
        return items, min(rvs, default=0)

    async def _relist(self) -> None:
        """LIST jobs, pods and Services and converge the cache with them: what the apiserver
        no longer has is pruned (its quota freed), what changed unseen is refreshed. The
        safety net for watch gaps (410 re-lists, a paused standby, a restart)."""
        if not self.leading and self.world.ready:
            return
        async with self._relist_lock:
            await self._relist_now()

    async def _relist_now(self) -> None:
        w = self.world
        jobs, jobs_rv = await self._list(f"/apis/{GROUP}/{VERSION}/{{ns}}" + kube.JOBS)
        pods, pods_rv = await self._list("/api/v1/{ns}pods", [("labelSelector", JOB_LABEL)])
        svcs, svcs_rv = await self._list("/api/v1/{ns}services",
                                         [("labelSelector", JOB_LABEL)])
        listed: dict[Any, dict[str, Any]] = {}
        for item in jobs:
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            item.setdefault("kind", "YOLOTrainingJob")
            listed[(item["metadata"]["namespace"], item["metadata"]["name"])] = item
        merged, pruned = merge_listing(w.jobs, listed, jobs_rv, w.deleted)
        for key in pruned:
            old = w.jobs.get(key)
            if old is not None:
                log.info("re-list: job %s/%s is gone; pruned, its quota freed", *key)
                w.forget(key, _uid(old))
                self.profiler.forget(key)
        for key, body in merged.items():
            w.put_job(key, body)
        for key in [k for k in w.finished if k not in listed]:
            del w.finished[key]  # a finished job deleted unseen
        # Pods and Services, keyed by their own names.
        cached_pods = {(k[0], n): p for k, named in w.pods.items() for n, p in named.items()}
        by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        merged_pods, gone = merge_listing(cached_pods, by_name, pods_rv)
        w.pods.clear()
        for pod in merged_pods.values():
            self._store_pod(pod)
        cached_svcs = {(k[0], launch_name(s)): s for k, s in w.services.items()}
        by_svc = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in svcs}
        merged_svcs, _ = merge_listing(cached_svcs, by_svc, svcs_rv)
        w.services.clear()
        for svc in merged_svcs.values():
            self._store_service(svc)
        if gone or pruned:
            log.info("re-list: pruned %d jobs and %d pods the apiserver no longer has",
                     len(pruned), len(gone))
        if self.reconciler is not None:
            self.reconciler.gangs.forget()

    async def _lead(self) -> None:
        """Follow kopf's peering: act only while leading; a new leader settles, re-lists,
        then goes through every live job."""
        assert self.api is not None
        s = self.settings
        ns = s.namespaces[0] if s.namespaces else None
        peering = await self.api.get(leadership.peering_path(s.peering or "", ns))
        now_leading = leadership.leading((peering or {}).get("status"), self.identity,
                                         self.priority)
        if now_leading and not self.leading:
            await asyncio.sleep(leadership.SETTLE_SECONDS)
            peering = await self.api.get(leadership.peering_path(s.peering or "", ns))
            if not leadership.leading((peering or {}).get("status"), self.identity,
                                      self.priority):
                return
            log.info("peering: this replica leads now; re-listing before acting")
            async with self._relist_lock:
                await self._relist_now()
            self.leading = True
            await self._start_trace_server()
            await self._resync()
        elif not now_leading and self.leading:
            log.info("peering: another replica leads; standing by")
            self.leading = False
            self.tasks = [t for t in self.tasks if not t.done()]  # (leadership may flap)
            self.tasks.append(asyncio.get_running_loop().create_task(self._stop_trace_server()))

    async def _start_trace_server(self) -> None:
        """Only the replica that leads traces: a standby holds no trace server (~700 MiB)
        until it takes over. Starting returns at once; the server imports in the
        background. A replica that stops leading stops it (_stop_trace_server)."""
        s = self.settings
        if s.trace_server and await asyncio.to_thread(trace_worker.start_server,
                                                       s.profile_builder):
            log.info("trace workers fork from a server importing %s",
                     ", ".join(trace_worker.preload_modules(s.profile_builder)))

    async def _stop_trace_server(self, poll: float = 2.0) -> None:
        """A replica that stops leading gives its trace server back once its own traces
        (asked for while it led) have ended; not if it leads again first. Stopping the
        server under a running trace would end that trace (its exit status travels through
        the server)."""
        while not self.leading and self.profiler.busy():
            await asyncio.sleep(poll)
        if not self.leading and self.settings.trace_server and await asyncio.to_thread(
                trace_worker.stop_server):
            log.info("trace server stopped: this replica stands by")

    async def _every(self, seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a loop must survive one failed round
                log.exception("background %s failed", getattr(fn, "__name__", fn))

    async def _refresh_fleet(self) -> None:
        """Nodes, and (for a standby replica whose watches are paused) policy and margins."""
        assert self.api is not None
        s, w = self.settings, self.world
        policy = await self.api.get(kube.policy_path(s.policy_name))
        spec = _policy_spec(policy) if policy else None
        if policy is None or spec is not None:  # a policy that does not parse: keep the last
            if spec != self._raw_policy:
                self.set_policy(spec)
        cm = await self.api.get(kube.configmap_path(s.operator_namespace, s.margins_configmap))
        w.margins.update(feedback.decode_margins((cm or {}).get("data")))
        nodes = await self.api.get("/api/v1/nodes", query=[("labelSelector", PRODUCT)],
                                   accept=kube.METADATA_ONLY)
        self.world.set_nodes([n for item in (nodes or {}).get("items", [])
                              if (n := node_from_object(item)) is not None])
        self._publish()
        await self._publish_fleet()

    async def _publish_fleet(self, generation: int | None = None) -> None:
        """The discovered fleet and learned margins, on the policy's status."""
        if not self.world.policy_exists or self.api is None:
            return
        from yolofit.operator.api import FleetClass, LearnedMargin
        from yolofit.units import format_bytes
        fleet = [FleetClass(name=c.name, product=c.product, nodes=c.nodes, gpus=c.total_gpus,
                            memory=format_bytes(c.gpu.memory_bytes),
                            usable=format_bytes(c.gpu.budget_bytes), bf16=c.gpu.bf16).wire()
                 for c in self.world.classes.values()]
        margins = [LearnedMargin(namespace=ns, model=model, gpu_class=cls,
                                 margin=v["margin"], observations=v["observations"]).wire()
                   for k, v in sorted(self.world.margins.items())
                   for ns, model, cls in [feedback.split_key(k)]]
        status: dict[str, Any] = {"fleet": fleet, "learnedMargins": margins}
        if generation is not None:
            status["observedGeneration"] = generation
        await self.api.merge_patch(kube.policy_path(self.settings.policy_name, status=True),
                                   {"status": status})

    async def _retry_waiting(self) -> None:
        """Queued and Profiling jobs, oldest first (the queue is FIFO per namespace): only
        the waiting index is walked, not every job."""
        if not self.leading:
            return
        w = self.world
        waiting = sorted((w.jobs[k]["metadata"].get("creationTimestamp", ""), k)
                          for k in list(w.waiting) if k in w.jobs)
        for _, key in waiting:
            await self._reconcile(key)

    async def _resync(self) -> None:
        if not self.leading:
            return
        for key in list(self.world.jobs):  # live jobs only: finished ones left memory
            await self._reconcile(key)

    async def _gauges(self) -> None:
        phases: Counter[tuple[str, str]] = Counter()
        gpus: Counter[tuple[str, str]] = Counter()
        for (ns, _), (_, phase) in self.world.finished.items():
            phases[(phase, ns)] += 1
        for (ns, _), body in self.world.jobs.items():
            st = body.get("status") or {}
            phases[(st.get("phase") or "Pending", ns)] += 1
            if st.get("admitted") and st.get("phase") not in TERMINAL_PHASES:
                plan = st.get("plan") or {}
                gpus[(plan.get("gpuClass", ""), ns)] += int(plan.get("gpus", 0))
        metrics.JOBS.clear()
        for (phase, ns), n in phases.items():
            metrics.JOBS.labels(phase, ns).set(n)
        metrics.ADMITTED_GPUS.clear()
        for (cls, ns), n in gpus.items():
            metrics.ADMITTED_GPUS.labels(cls, ns).set(n)
        metrics.JOB_MEMORY.clear()
        for labels, value in memory_samples(self.world.jobs.items()):
            metrics.JOB_MEMORY.labels(*labels).set(value)

    async def _profiled(self, key: ProfileKey) -> None:
        await self._retry_waiting()

    async def _reconcile(self, key: Key) -> None:
        assert self.reconciler is not None
        if not self.leading:  # a standby only keeps its cache
            return
        released = len(self.world.reserved)
        try:
            await self.reconciler.reconcile(key)
        except Exception:  # noqa: BLE001 - logged; the next event or resync retries
            log.exception("reconcile %s/%s failed", *key)
        if len(self.world.reserved) < released:  # quota freed: admit waiting jobs now
            asyncio.get_running_loop().create_task(self._retry_waiting())

    # --- watch events -----------------------------------------------------------------------

    def _served(self, namespace: str | None) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    async def _on_job(self, event: dict[str, Any], **_: Any) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if not self._served(key[0]):
            return
        if event.get("type") == "DELETED":
            self.world.forget(key, meta.get("uid", ""))
            self.profiler.forget(key)
            if self.leading:  # quota freed: admit what waits for it now
                asyncio.get_running_loop().create_task(self._retry_waiting())
            return
        cached = self.world.jobs.get(key)
        if cached is not None and _rv(cached) > _rv(obj) and _uid(cached) == _uid(obj):
            return  # our own newer write is already cached
        self.world.put_job(key, dict(obj))
        if self.leading and key in self.world.jobs:
            await self._reconcile(key)

    def _store_pod(self, pod: dict[str, Any]) -> Key | None:
        meta = pod.get("metadata", {})
        job = (meta.get("labels") or {}).get(JOB_LABEL)
        if not job:
            return None
        key = (meta.get("namespace", ""), job)
        owner = ownership.controller(pod)
        if owner is not None and self.world.finished_uid(key, str(owner.get("uid", ""))):
            return None  # a finished job's pod: not kept in memory
        self.world.pods[key][meta["name"]] = pod
        return key

    def _store_service(self, svc: dict[str, Any]) -> Key | None:
        meta = svc.get("metadata", {})
        job = (meta.get("labels") or {}).get(JOB_LABEL)
        if not job or meta.get("name") != job:
            return None
        key = (meta.get("namespace", ""), job)
        self.world.services[key] = svc
        return key

    async def _on_service(self, event: dict[str, Any], **_: Any) -> None:
        """Services are watched: one deleted out of band is recreated by the next pass."""
        svc = event.get("object") or {}
        meta = svc.get("metadata", {})
        if not self._served(meta.get("namespace")):
            return
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(JOB_LABEL, ""))
        if event.get("type") == "DELETED":
            current = self.world.services.get(key)
            if current is not None and _uid(current) in ("", _uid(svc)):
                del self.world.services[key]
        elif self._store_service(svc) is None:
            return
        if key in self.world.jobs and self.leading:
            await self._reconcile(key)

    async def _on_pod(self, event: dict[str, Any], **_: Any) -> None:
        pod = event.get("object") or {}
        meta = pod.get("metadata", {})
        if not self._served(meta.get("namespace")):
            return
        if event.get("type") == "DELETED":
            job = (meta.get("labels") or {}).get(JOB_LABEL, "")
            key = (meta.get("namespace", ""), job)
            current = self.world.pods.get(key, {}).get(meta.get("name", ""))
            if current is not None and _uid(current) in ("", _uid(pod)):
                del self.world.pods[key][meta["name"]]
                if not self.world.pods[key]:
                    del self.world.pods[key]
        else:
            stored = self._store_pod(pod)
            if stored is None:
                return
            key = stored
        if key in self.world.jobs and self.leading:
            await self._reconcile(key)

    async def _prime_workloads(self, ns: str) -> None:
        """Kueue's Workloads (none when Kueue is not installed: 404)."""
        assert self.api is not None and self.reconciler is not None
        path = (kueue.workload_path(ns) if ns else
                f"/apis/{kueue.GROUP}/{kueue.VERSION}/workloads")
        for item in (await self.api.get(path) or {}).get("items", []):
            self.reconciler.kueue.on_workload({"type": None, "object": item}, self.world.jobs)

    async def _on_workload(self, event: dict[str, Any], **_: Any) -> None:
        if self.reconciler is None:
            return
        key = self.reconciler.kueue.on_workload(event, self.world.jobs)
        if key is not None and self._served(key[0]):
            await self._reconcile(key)

    async def _on_policy(self, event: dict[str, Any], name: str, **_: Any) -> None:
        if name != self.settings.policy_name:
            return
        if event.get("type") == "DELETED":
            self.set_policy(None)
            return
        obj = event.get("object") or {}
        spec = _policy_spec(obj)
        if spec is None:
            self.post_event(obj, "Warning", "InvalidPolicy", "the policy does not parse; the "
                        "operator keeps the last valid one (see the operator's log)")
            return
        self.set_policy(spec)
        if self.api is not None:
            await self._publish_fleet(obj.get("metadata", {}).get("generation"))


def _policy_spec(obj: dict[str, Any]) -> GPUCapacityPolicySpec | None:
    """The spec of a policy object, or None (logged) when it does not parse: a policy written
    before the validating webhook existed must not stop the operator."""
    try:
        return GPUCapacityPolicySpec.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        log.error("GPUCapacityPolicy %s does not parse, ignored: %s",
                  obj.get("metadata", {}).get("name", ""), exc)
        return None


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig ($KUBECONFIG)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def peering_priority(pod_name: str) -> int:
    """A stable per-replica kopf peering priority from the pod's name (0 when unnamed)."""
    if not pod_name:
        return 0
    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:3], "big") + 1


def launch_name(svc: dict[str, Any]) -> str:
    return str(svc.get("metadata", {}).get("name", ""))
