"""kopf wiring: watches feed the in-memory World and trigger reconcile passes; startup
primes the World with LISTs (so a restarted operator knows every admitted job before it
admits another); background loops retry Queued/Profiling jobs, resync everything, refresh
the fleet and publish gauges. No decisions here: see reconcile.py and the pure modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import Counter
from typing import Any, cast

import kopf

from yolofit.estimator.profile import ProfileKey, ProfileStore
from yolofit.operator import (
    admission_server,
    feedback,
    kube,
    kueue,
    metrics,
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
from yolofit.operator.state import Key, World

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
        self.reconciler: Reconciler | None = None
        self.profiler = Profiler(self.world.store, settings.profile_builder, self._profiled)
        self.tasks: list[asyncio.Task[None]] = []
        self.admission: admission_server.AdmissionServer | None = None
        self._raw_policy: GPUCapacityPolicySpec | None = None
        self._published: tuple[Any, ...] = ()
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
        else:
            settings.peering.standalone = True
        self.api = kube.Kube(kube.load_config(s.kubeconfig), s.api_workers)
        self.set_policy(None)
        self.reconciler = Reconciler(self.world, self.api, _post_event, self.profiler.start,
                                     s.trainer_metrics_port)
        self.reconciler.settings_ns = s.operator_namespace
        self.reconciler.monitoring_namespace = s.monitoring_namespace
        self.reconciler.settings_cm = s.margins_configmap
        await self._prime()
        if s.install_webhooks:
            await self._start_admission()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._every(s.queue_interval, self._retry_waiting)),
                      loop.create_task(self._every(s.resync_interval, self._resync)),
                      loop.create_task(self._every(s.fleet_interval, self._refresh_fleet)),
                      loop.create_task(self._every(5.0, self._gauges)),
                      loop.create_task(self._every(1.0, self._publish_if_changed))]
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
        assert self.api is not None
        s, w = self.settings, self.world
        namespaces = s.namespaces or [""]
        for ns in namespaces:
            jobs = await self.api.get(f"/apis/{GROUP}/{VERSION}/" + (
                f"namespaces/{ns}/" if ns else "") + kube.JOBS) or {"items": []}
            for item in jobs["items"]:
                item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
                item.setdefault("kind", "YOLOTrainingJob")
                w.jobs[(item["metadata"]["namespace"], item["metadata"]["name"])] = item
            pods = await self.api.get("/api/v1/" + (f"namespaces/{ns}/" if ns else "") + "pods",
                                      query=[("labelSelector", JOB_LABEL)]) or {"items": []}
            for pod in pods["items"]:
                self._store_pod(pod)
            svcs = await self.api.get("/api/v1/" + (f"namespaces/{ns}/" if ns else "") +
                                      "services", query=[("labelSelector", JOB_LABEL)]) or {
                                          "items": []}
            for svc in svcs["items"]:
                w.services.add((svc["metadata"]["namespace"], svc["metadata"]["name"]))
            await self._prime_workloads(ns)
        await self._refresh_fleet()

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
        """Queued and Profiling jobs, oldest first (the queue is FIFO per namespace)."""
        waiting = sorted(((b["metadata"].get("creationTimestamp", ""), k)
                          for k, b in list(self.world.jobs.items())
                          if (b.get("status") or {}).get("phase") in ("Queued", "Profiling")))
        for _, key in waiting:
            await self._reconcile(key)

    async def _resync(self) -> None:
        for key, body in list(self.world.jobs.items()):
            if (body.get("status") or {}).get("phase") not in TERMINAL_PHASES:
                await self._reconcile(key)

    async def _gauges(self) -> None:
        phases: Counter[tuple[str, str]] = Counter()
        gpus: Counter[tuple[str, str]] = Counter()
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
            self.world.jobs.pop(key, None)
            self.world.release(meta.get("uid", ""))
            self.world.services.discard(key)
            self.world.pods.pop(key, None)
            self.world.locks.pop(key, None)
            return
        cached = self.world.jobs.get(key)
        if cached is not None and _rv(cached) > _rv(obj) and _uid(cached) == _uid(obj):
            return  # our own newer write is already cached
        self.world.jobs[key] = dict(obj)
        await self._reconcile(key)

    def _store_pod(self, pod: dict[str, Any]) -> Key | None:
        meta = pod.get("metadata", {})
        job = (meta.get("labels") or {}).get(JOB_LABEL)
        if not job:
            return None
        key = (meta.get("namespace", ""), job)
        self.world.pods[key][meta["name"]] = pod
        return key

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
        else:
            stored = self._store_pod(pod)
            if stored is None:
                return
            key = stored
        if key in self.world.jobs:
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
            _post_event(obj, "Warning", "InvalidPolicy", "the policy does not parse; the "
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


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except ValueError:
        return 0


def _uid(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(cast(Any, body), type=type_, reason=reason, message=message[:1000])
    except LookupError:  # outside kopf's context (unit tests): log only
        log.info("%s %s: %s", type_, reason, message)


def peering_priority(pod_name: str) -> int:
    """A stable per-replica kopf peering priority from the pod's name (0 when unnamed)."""
    if not pod_name:
        return 0
    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:3], "big") + 1
