"""Events are posted by the operator's own client, from any task: a background loop's Event
used to be only logged (kopf.event needs kopf's handler context)."""

from __future__ import annotations

import asyncio
from typing import Any

from yolofit.operator import events

JOB = {"apiVersion": "yolofit.io/v1alpha1", "kind": "YOLOTrainingJob",
       "metadata": {"name": "j", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("apiserver down")
        self.posted.append((path, body))
        return body


def test_event_names_the_object_and_is_bounded() -> None:
    e = events.build(JOB, "Warning", "OutOfMemory", "x" * 5000, "2026-12-01T00:00:00Z", "op-0")
    assert e["involvedObject"] == {"apiVersion": "yolofit.io/v1alpha1",
                                   "kind": "YOLOTrainingJob", "name": "j", "namespace": "ns",
                                   "uid": "u-1", "resourceVersion": "7"}
    assert e["metadata"]["namespace"] == "ns" and e["metadata"]["name"].startswith("j.")
    assert len(e["message"]) == events.MESSAGE_LIMIT
    assert (e["type"], e["reason"], e["reportingInstance"]) == ("Warning", "OutOfMemory", "op-0")
    other = events.build(JOB, "Normal", "Queued", "m", "2026-12-01T00:00:00Z")
    assert other["metadata"]["name"] != e["metadata"]["name"]


def test_a_background_task_posts_and_a_failed_post_is_not_an_error() -> None:
    async def run(api: Recorder) -> None:
        poster = events.Poster(api)  # type: ignore[arg-type]

        async def background() -> None:  # e.g. the queue loop, outside any kopf handler
            poster(JOB, "Normal", "Admitted", "admitted on t4")
        await asyncio.create_task(background())
        await asyncio.gather(*poster.pending)

    ok = Recorder()
    asyncio.run(run(ok))
    assert [(p, b["reason"]) for p, b in ok.posted] == [("/api/v1/namespaces/ns/events",
                                                         "Admitted")]
    asyncio.run(run(Recorder(fail=True)))  # logged, not raised


def test_without_a_loop_or_client_it_only_logs() -> None:
    events.Poster(None)(JOB, "Normal", "Planned", "m")
    events.Poster(Recorder())(JOB, "Normal", "Planned", "m")  # type: ignore[arg-type]
