"""The parts of a job spec that go into its pods, checked at admission as the apiserver
would check the pods, so a job that could never create its pods is refused at `kubectl
apply` (naming the field) instead of failing later. Pure.

- resources.cpu / memory / shm: Kubernetes quantities, positive.
- volumes: names are DNS labels, unique, and not one yolofit adds itself (INTERNAL_VOLUMES).
- volumeMounts: each names a volume of the job (or an internal one), absolute paths, and
  none over a path yolofit mounts itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from yolofit.operator.api import YOLOTrainingJobSpec

# Volumes (and their mount paths) that launch.build_pod adds to every pod.
INTERNAL_VOLUMES = {"dshm": "/dev/shm"}
# Kubernetes' quantity grammar: a number, then a binary or decimal SI suffix or an exponent.
QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
EXAMPLES = {"cpu": "4 or 500m", "memory": "32Gi", "shm": "8Gi"}


def quantity_error(field: str, value: str) -> str | None:
    if not QUANTITY.match(value.strip()):
        return (f"{field}: {value!r} is not a Kubernetes quantity (e.g. "
                f"{EXAMPLES.get(field.rsplit('.', 1)[-1], '4')})")
    if not re.search(r"[1-9]", value.split("e")[0].split("E")[0]):
        return f"{field}: {value!r} must be more than zero"
    return None


def errors(spec: YOLOTrainingJobSpec) -> list[str]:
    out = [e for f in ("cpu", "memory", "shm")
           if (e := quantity_error(f"spec.resources.{f}", getattr(spec.resources, f)))]
    out += _volume_errors(spec.volumes)
    out += _mount_errors(spec.volume_mounts, {str(v.get("name")) for v in spec.volumes})
    return out


def _volume_errors(volumes: Iterable[dict[str, Any]]) -> list[str]:
    out, seen = [], set()
    for i, v in enumerate(volumes):
        name = str(v.get("name") or "")
        field = f"spec.volumes[{i}].name"
        if name in INTERNAL_VOLUMES:
            out.append(f"{field}: {name!r} is reserved: yolofit adds the volume {name!r} "
                       f"({INTERNAL_VOLUMES[name]}) to every pod; choose another name")
        elif not DNS_LABEL.match(name) or len(name) > 63:
            out.append(f"{field}: {name!r} must be a DNS label (lowercase letters, digits "
                       f"and '-', at most 63 characters)")
        elif name in seen:
            out.append(f"{field}: {name!r} is used by more than one volume")
        seen.add(name)
    return out


def _mount_errors(mounts: Iterable[dict[str, Any]], volumes: set[str]) -> list[str]:
    out = []
    for i, m in enumerate(mounts):
        name, path = str(m.get("name") or ""), str(m.get("mountPath") or "")
        if name not in volumes and name not in INTERNAL_VOLUMES:
            out.append(f"spec.volumeMounts[{i}].name: {name!r} is not a volume of the job "
                       f"(spec.volumes has {', '.join(sorted(volumes)) or 'none'})")
        if not path.startswith("/"):
            out.append(f"spec.volumeMounts[{i}].mountPath: {path!r} must be an absolute path")
        elif path.rstrip("/") in INTERNAL_VOLUMES.values():
            out.append(f"spec.volumeMounts[{i}].mountPath: {path} is where yolofit mounts "
                       f"its own volume; use spec.resources.shm to size /dev/shm")
    return out
