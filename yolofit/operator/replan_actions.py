"""The reconciler's side of replan.py (a mixin of Reconciler): act on pods that measured
denser data or a bigger model than the plan assumed.

The measured inputs go to status.measuredInputs, the new plan to status.plan, the attempt
moves on with a `Replan` entry (its cause DataDenser or ModelDiffers) and a `Replanned`
Event, and the old attempt's pods are deleted, in that order: written first, so an operator
killed in between finds the new attempt and deletes the old pods as stale. Once per (job
UID, attempt): the next pass screens the old attempt's summaries out. No margin is learned
and neither maxReplans nor the failure policy's restarts are spent. When nothing fits any
more, the job fails naming the figure and what would fit; the pass releases its quota and
pods as for any failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yolofit.operator import metrics, replan
from yolofit.operator.api import Plan, Replan, YOLOTrainingJob, YOLOTrainingJobStatus
from yolofit.operator.feedback import PodReport
from yolofit.operator.reconciler_parts import ReconcilerParts
from yolofit.operator.state import Key
from yolofit.operator.status import set_condition


class ReplanActions(ReconcilerParts):
    async def _delete_pods(self, key: Key, names: list[str],
                           pods: dict[str, dict[str, Any]] | None = None
                           ) -> None:  # provided by FailureActions
        raise NotImplementedError

    def _fleet(self) -> replan.Fleet:
        w = self.world
        return replan.Fleet(w.policy, w.classes, w.store, w.margin_values())

    async def _replan_measured(self, key: Key, body: dict[str, Any], job: YOLOTrainingJob,
                               plan: Plan, st: YOLOTrainingJobStatus,
                               reports: Sequence[PodReport], gen: int, t: str) -> bool:
        """True when the pass ends here: the job was re-planned as a new attempt, or failed
        because nothing fits the measured inputs."""
        before = replan.assumed(job.spec, self.world.policy, plan, st.measured_inputs)
        inputs = replan.found(reports, before, st.measured_inputs, st.attempt, t)
        if inputs is None:
            return False
        d = replan.decide(key[1], key[0], job.spec, self._fleet(), plan, before, inputs)
        st.measured_inputs = inputs
        if d.action == "fail":
            self._fail(body, st, d.cause, d.message, gen, t)  # _pass then stops the pods
            return True
        st.attempt += 1
        st.start_time, st.measured = None, None
        st.plan = d.plan  # None (a profile to trace first): the next pass plans, Profiling
        if d.plan is not None:
            st.replans.append(Replan(attempt=st.attempt, cause=d.cause, reason=d.message,
                                     from_batch_per_gpu=plan.batch_per_gpu,
                                     to_batch_per_gpu=d.plan.batch_per_gpu,
                                     accumulate=d.plan.accumulate,
                                     checkpointing=d.plan.checkpointing, time=t))
        st.phase = "Admitted"
        st.message = f"re-planned (attempt {st.attempt}): {d.message}"
        st.conditions = set_condition(st.conditions, "PodsReady", "False", "Replanned",
                                      st.message, gen, t)
        self.event(body, "Normal", "Replanned", d.message)
        metrics.REPLANS.labels(plan.gpu_class, key[0], d.cause).inc()
        await self._write_status(key, body, st)
        await self._delete_pods(key, list(self.world.pods_of(key)))
        return True
