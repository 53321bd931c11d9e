"""The job's headless Service, and foreign objects reported on the job. The reconciler's
hooks; ownership decisions in ownership.py.

The Service is the job's when its controller ownerReference carries the job's UID. A 409 on
create is not taken as "mine": the existing Service is read, and one of a deleted job of the
same name (garbage collection pending) is waited for, a foreign one reported. Services are
watched (handlers.py), so one deleted out of band is recreated on the next pass.
"""

from __future__ import annotations

from typing import Any

from yolofit.operator import kube, launch, ownership
from yolofit.operator.api import YOLOTrainingJobStatus
from yolofit.operator.gang_shell import Block
from yolofit.operator.kube import Kube
from yolofit.operator.state import Key, World
from yolofit.operator.status import set_condition

CONFLICT = "ForeignObjects"  # condition type: True while foreign objects collide


async def ensure_service(world: World, api: Kube, key: Key, body: dict[str, Any]) -> Block | None:
    ns, name = key
    uid = body["metadata"]["uid"]
    svc = world.services.get(key)
    if svc is not None and ownership.owned_by(svc, uid):
        return None
    if svc is None:
        svc = await api.create(kube.services_path(ns), launch.build_service(body))
        if svc is None:  # 409: someone's Service has the name; whose?
            svc = await api.get(kube.services_path(ns, launch.service_name(name)))
        if svc is None:
            return Block(f"Service {launch.service_name(name)} is being replaced; retrying")
        world.services[key] = svc
    if ownership.owned_by(svc, uid):
        return None
    if ownership.leftover_of(svc, name) or (svc.get("metadata") or {}).get("deletionTimestamp"):
        world.services.pop(key, None)  # look again next pass
        return Block(f"waiting for Service {launch.service_name(name)} of a deleted job of "
                     f"the same name to be garbage-collected")
    return Block(ownership.conflict_message("Service", [launch.service_name(name)], name,
                                            ownership.describe(svc)), foreign=True)


def foreign_pods(world: World, key: Key) -> tuple[list[str], list[str]]:
    """(leftovers of a deleted same-name job, foreign pods) carrying the job's label."""
    c = ownership.classify(world.pods.get(key, {}).values(), key[1], world.uid_of(key))
    return c.leftovers, c.foreign


def pods_conflict(pods: list[str], job: str) -> str:
    return ownership.conflict_message("pod" if len(pods) == 1 else "pods", pods, job,
                                      f"labelled {launch.JOB_LABEL}={job}")


def report(body: dict[str, Any], st: YOLOTrainingJobStatus, messages: list[str], gen: int,
           t: str, event: Any) -> None:
    """Set (or clear) the ForeignObjects condition; an Event when it becomes True or its
    message changes."""
    old = next((c for c in st.conditions if c.type == CONFLICT), None)
    if messages:
        msg = "; ".join(messages)
        if old is None or old.status != "True" or old.message != msg:
            event(body, "Warning", CONFLICT, msg)
        st.conditions = set_condition(st.conditions, CONFLICT, "True", "NotAdopted", msg, gen, t)
    elif old is not None and old.status == "True":
        st.conditions = set_condition(st.conditions, CONFLICT, "False", "NoConflict",
                                      "no foreign objects collide with the job's", gen, t)
