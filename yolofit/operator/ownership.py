"""Which children are a job's: matched by the controller ownerReference's UID, never by name
or label alone. Pure.

A pod or Service that carries the job's label or name but another controller is either a
leftover of a deleted job of the same name (its garbage collection is pending: wait for it)
or foreign (never adopted, never deleted by us, reported on the job).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JOB_KIND = "YOLOTrainingJob"


def controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    ref = controller(obj)
    return bool(uid) and ref is not None and ref.get("uid") == uid


def leftover_of(obj: Mapping[str, Any], job: str) -> bool:
    """Controlled by another (deleted) YOLOTrainingJob of the same name."""
    ref = controller(obj)
    return ref is not None and ref.get("kind") == JOB_KIND and ref.get("name") == job


@dataclass
class Children:
    owned: dict[str, dict[str, Any]] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)  # a deleted same-name job's
    foreign: list[str] = field(default_factory=list)


def classify(objs: Iterable[Mapping[str, Any]], job: str, uid: str) -> Children:
    out = Children()
    for obj in objs:
        name = (obj.get("metadata") or {}).get("name", "")
        if owned_by(obj, uid):
            out.owned[name] = dict(obj)
        elif leftover_of(obj, job):
            out.leftovers.append(name)
        else:
            out.foreign.append(name)
    out.leftovers.sort()
    out.foreign.sort()
    return out


def describe(obj: Mapping[str, Any]) -> str:
    ref = controller(obj)
    by = f"{ref.get('kind')}/{ref.get('name')}" if ref else "no controller"
    return by


def conflict_message(kind: str, names: list[str], job: str, detail: str = "") -> str:
    shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    return (f"{kind} {shown} {'carries' if len(names) == 1 else 'carry'} the name or label of "
            f"job {job} but {'is' if len(names) == 1 else 'are'} not owned by it"
            f"{f' ({detail})' if detail else ''}; not adopted")
