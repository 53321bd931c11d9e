"""`yolofit kueue flavors | queues`: Kueue objects rendered from a GPUCapacityPolicy (see
kueue_objects.py), printed as YAML for `kubectl apply -f -`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("kueue", help="render Kueue objects from a GPUCapacityPolicy",
                            description="ResourceFlavors per GPU class (by the classes' "
                            "node labels) and a ClusterQueue + LocalQueue per team.")
    kq = parser.add_subparsers(dest="kueue_command", metavar="SUBCOMMAND", required=True)
    fl = kq.add_parser("flavors", help="one ResourceFlavor per GPU class of the policy")
    fl.add_argument("-f", "--policy", type=Path, required=True,
                    help="GPUCapacityPolicy YAML (e.g. deploy/examples/policy.yaml)")
    fl.set_defaults(func=_flavors)
    qs = kq.add_parser("queues", help="ClusterQueue + LocalQueue per namespace rule, with "
                       "quota per class from a fleet file")
    qs.add_argument("-f", "--policy", type=Path, required=True, help="GPUCapacityPolicy YAML")
    qs.add_argument("--fleet", type=Path, help="fleet YAML (default: deploy/fleet.yaml)")
    qs.set_defaults(func=_queues)


def _policy(path: Path) -> Any:
    import yaml
    from pydantic import ValidationError

    from yolofit.cli import UsageError
    from yolofit.operator.api import GPUCapacityPolicySpec

    if not path.is_file():
        raise UsageError(f"--policy {path}: no such file")
    doc = yaml.safe_load(path.read_text()) or {}
    try:
        return GPUCapacityPolicySpec.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--policy {path}: spec.{'.'.join(map(str, err['loc']))}: "
                         f"{err['msg']}") from None


def _print(objs: list[dict[str, Any]]) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))


def _flavors(args: argparse.Namespace) -> int:
    from yolofit.cli import UsageError
    from yolofit.operator.kueue_objects import PolicyError, flavors

    try:
        _print(flavors(_policy(args.policy)))
    except PolicyError as exc:
        raise UsageError(f"--policy {args.policy}: {exc}") from None
    return 0


def _queues(args: argparse.Namespace) -> int:
    from yolofit.operator.kueue_objects import queues
    from yolofit.sandbox.fleet import default_fleet_path, fleet_nodes, load_fleet
    from yolofit.sandbox.kueue import fleet_capacity

    policy = _policy(args.policy)
    nodes = fleet_nodes(load_fleet(args.fleet or default_fleet_path()))
    _print(queues(policy, fleet_capacity(policy, nodes)))
    return 0
