"""Which replica acts: kopf's peering, read back. Pure, plus the object's path.

kopf pauses a replica's watches while a live peer of higher priority exists, but our own
background loops (queue, resync, re-list) are not kopf handlers and would keep admitting
from a stale cache. They act only while `leading()` is true, by the same rule kopf applies
to the peering object's status: no live peer other than us with a priority >= ours. A
replica that becomes the leader re-lists before it admits anything (the leader it replaces
may have admitted jobs it never saw), after a settle time in which a replica that started
alongside it sees the peering change and pauses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

SETTLE_SECONDS = 3.0


def peering_path(name: str, namespace: str | None) -> str:
    if namespace:
        return f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}"
    return f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"


def _alive(info: Mapping[str, Any], now: dt.datetime) -> bool:
    try:
        seen = dt.datetime.fromisoformat(str(info.get("lastseen")))
    except ValueError:
        return True  # kopf treats an unreadable entry as just seen
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    return seen + dt.timedelta(seconds=int(info.get("lifetime", 60))) > now


def leading(status: Mapping[str, Any] | None, me: str, priority: int,
            now: dt.datetime | None = None) -> bool:
    """True when no live peer other than `me` has a priority >= `priority`."""
    now = now or dt.datetime.now(dt.UTC)
    for identity, info in (status or {}).items():
        if identity == me or not isinstance(info, Mapping):
            continue
        if _alive(info, now) and int(info.get("priority", 0)) >= priority:
            return False
    return True
