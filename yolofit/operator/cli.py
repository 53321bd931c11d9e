"""`yolofit operator` (run the operator: kopf, webhooks, metrics, probes) and `yolofit crds`
(print or write the CRDs generated from the pydantic models)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def register(sub: Any) -> None:
    op = sub.add_parser("operator", help="run the yolofit operator (kopf) with its webhooks")
    op.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or $KUBECONFIG)")
    op.add_argument("--namespace", "-n", action="append", dest="namespaces", default=None,
                    help="serve only this namespace (repeatable; default: all)")
    op.add_argument("--operator-namespace", help="namespace for the operator's own state")
    op.add_argument("--webhook-port", type=int, help="admission webhook HTTPS port")
    op.add_argument("--webhook-mode", choices=["url", "service"],
                    help="register webhooks by URL (sandbox) or Service (in-cluster)")
    op.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = off)")
    op.add_argument("--health-port", type=int, help="/healthz and /readyz port (0 = off)")
    op.add_argument("--install-webhooks", action="store_true", default=None,
                    help="serve the webhooks and register their configurations")
    op.add_argument("--peering", help="kopf peering name (leader election between replicas)")
    op.add_argument("--trace-memory-budget", metavar="SIZE",
                    help="host memory one profile trace may use, e.g. 3GiB (its worker is "
                         "killed above it; the chart sets it with the memory limit)")
    op.set_defaults(func=run_operator)

    crds = sub.add_parser("crds", help="print or write the CRDs generated from the API models")
    crds.add_argument("--write", nargs="?", const=str(DEFAULT_CRD_DIR), metavar="DIR",
                      help=f"write one YAML per CRD into DIR (default {DEFAULT_CRD_DIR})")
    crds.add_argument("--check", nargs="?", const=str(DEFAULT_CRD_DIR), metavar="DIR",
                      help="exit 1 if the files in DIR differ from the generated CRDs")
    crds.set_defaults(func=run_crds)


def run_crds(args: argparse.Namespace) -> int:
    from yolofit.operator import crds

    generated = {name: crds.render(crd) for name, crd in crds.crds().items()}
    if args.check:
        stale = [n for n, text in generated.items()
                 if not (Path(args.check) / n).is_file()
                 or (Path(args.check) / n).read_text() != text]
        for n in stale:
            print(f"{Path(args.check) / n} differs from the API models; run yolofit crds --write",
                  file=sys.stderr)
        return 1 if stale else 0
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in generated.items():
            (out / name).write_text(text)
            print(out / name)
        return 0
    print("---\n".join(generated.values()), end="")
    return 0


def settings_from(args: argparse.Namespace) -> Any:
    from yolofit.operator.settings import OperatorSettings

    overrides = {k: v for k, v in {
        "kubeconfig": args.kubeconfig, "namespaces": args.namespaces,
        "operator_namespace": args.operator_namespace, "webhook_port": args.webhook_port,
        "webhook_mode": args.webhook_mode, "metrics_port": args.metrics_port,
        "health_port": args.health_port, "install_webhooks": args.install_webhooks,
        "peering": args.peering,
        "trace_memory_budget": getattr(args, "trace_memory_budget", None)}.items()
        if v is not None}
    return OperatorSettings(**overrides)


def run_operator(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # for kopf's own login
    asyncio.run(serve(settings))
    return 0


async def serve(settings: Any, stop_flag: asyncio.Event | None = None) -> None:
    import kopf
    from prometheus_client import start_http_server

    from yolofit.operator import metrics
    from yolofit.operator.handlers import Operator
    from yolofit.operator.health import start_health

    op = Operator(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.REGISTRY)
    ready = asyncio.Event()
    health = await start_health(settings.health_port, op.world) if settings.health_port else None
    try:
        await kopf.operator(
            registry=op.registry, clusterwide=not settings.namespaces,
            namespaces=settings.namespaces or (), standalone=not settings.peering,
            peering_name=settings.peering, ready_flag=ready, stop_flag=stop_flag,
            identity=op.identity)  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
    finally:
        if health is not None:
            await health.cleanup()
