"""Where a job's outputs live: one PersistentVolumeClaim per job, or an emptyDir.

The trainer runs as the non-root user 10001, so outputDir (default /runs) must be a volume it
may write, not the image's root filesystem. Unless the job mounts its own volume at (or
above) outputDir, yolofit gives it one:

- the policy's `outputs.size` set: a PersistentVolumeClaim `<job>-outputs-<uid8>` (the
  job's UID in the name: a re-created job of the same name never adopts a retained claim of
  an earlier one), owned by the job, so it outlives the pods and is deleted with the job,
  unless `outputs.retain`. With ReadWriteMany it is mounted in every pod, otherwise only in
  pod 0, where rank 0 writes checkpoints; pod-level `fsGroup` makes it writable for 10001;
- otherwise an emptyDir (writable by anyone), and the job carries ResultsPersistent=False:
  its results are lost with the pods.

Every attempt writes under `<outputDir>/<job>/attempt-<n>` (yolofit/trainer/resume.py) and
resumes from the previous attempt's last.pt. `plan_storage`, `pod_volumes` and `results` are
pure; `ensure_claim` is the only API call.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yolofit.operator import feedback
from yolofit.operator.api import (
    API_VERSION,
    OutputStorage,
    Results,
    YOLOTrainingJobSpec,
    YOLOTrainingJobStatus,
)

if TYPE_CHECKING:
    from yolofit.operator.kube import Kube

VOLUME = "yolofit-outputs"
TRAINER_GID = 10001  # the trainer image's user and group (Dockerfile)
EPHEMERAL_MESSAGE = ("results are in an emptyDir and are lost when the pods end; give the "
                     "GPUCapacityPolicy outputs.size (and storageClassName) for a "
                     "PersistentVolumeClaim per job, or mount a volume at spec.outputDir")


@dataclass(frozen=True)
class Storage:
    """What holds a job's outputDir."""

    kind: str  # "pvc", "emptyDir" or "spec" (a volume the job mounts itself)
    description: str  # for status.results.storage
    ephemeral: bool
    claim: dict[str, Any] | None = None  # the PVC to create (kind "pvc")
    every_pod: bool = True  # mount in every pod, else only in pod 0


def claim_name(job: str, uid: str) -> str:
    return f"{job}-outputs-{uid.replace('-', '')[:8]}"


def _covers(mount_path: str, output_dir: str) -> bool:
    mount = posixpath.normpath(mount_path)
    out = posixpath.normpath(output_dir)
    return out == mount or out.startswith(mount.rstrip("/") + "/")


def _user_volume(spec: YOLOTrainingJobSpec) -> dict[str, Any] | None:
    """The job's own volume mounted at or above outputDir (the deepest such mount)."""
    mounts = [m for m in spec.volume_mounts
              if isinstance(m.get("mountPath"), str) and _covers(m["mountPath"], spec.output_dir)]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return next((v for v in spec.volumes if v.get("name") == mount.get("name")),
                {"name": mount.get("name", "")})


def plan_storage(job: Mapping[str, Any], spec: YOLOTrainingJobSpec,
                 outputs: OutputStorage) -> Storage:
    """The job's output storage (pure)."""
    meta = job["metadata"]
    own = _user_volume(spec)
    if own is not None:
        kind = next((k for k in own if k != "name"), "volume")
        return Storage("spec", f"{kind} {own.get('name', '')} (spec.volumes)",
                       ephemeral=kind == "emptyDir")
    if not outputs.size:
        return Storage("emptyDir", "emptyDir (ephemeral)", ephemeral=True)
    name = claim_name(meta["name"], meta["uid"])
    claim: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {"yolofit.io/job": meta["name"],
                                "yolofit.io/job-uid": meta["uid"],
                                "app.kubernetes.io/component": "outputs",
                                "app.kubernetes.io/managed-by": "yolofit"}},
        "spec": {"accessModes": [outputs.access_mode],
                 "resources": {"requests": {"storage": outputs.size}}},
    }
    if outputs.storage_class_name:
        claim["spec"]["storageClassName"] = outputs.storage_class_name
    if not outputs.retain:
        claim["metadata"]["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": "YOLOTrainingJob", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]
    return Storage("pvc", f"persistentVolumeClaim {name}" + (" (retained)" if outputs.retain
                                                             else ""),
                   ephemeral=False, claim=claim,
                   every_pod=outputs.access_mode == "ReadWriteMany")


def pod_volumes(storage: Storage, spec: YOLOTrainingJobSpec, rank: int
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(volumes, mounts, pod securityContext fields) to add to pod `rank` (pure)."""
    if storage.kind == "spec":
        return [], [], {}
    mount = {"name": VOLUME, "mountPath": spec.output_dir}
    if storage.kind == "pvc" and storage.claim and (storage.every_pod or rank == 0):
        volume = {"name": VOLUME, "persistentVolumeClaim": {
            "claimName": storage.claim["metadata"]["name"]}}
        return [volume], [mount], {"fsGroup": TRAINER_GID,
                                   "fsGroupChangePolicy": "OnRootMismatch"}
    # emptyDir, or a pod other than 0 when the claim mounts on one node only: ranks there
    # write only their own reports, and receive the resume checkpoint from rank 0.
    return [{"name": VOLUME, "emptyDir": {}}], [mount], {}


async def ensure_claim(api: Kube, storage: Storage) -> None:
    """Create the job's claim; AlreadyExists is success (its name carries the job's UID)."""
    if storage.claim is not None:
        ns = storage.claim["metadata"]["namespace"]
        await api.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", storage.claim)


def attempt_path(output_dir: str, job: str, attempt: int) -> str:
    """The trainer's directory of one attempt (yolofit.trainer.resume.attempt_dir)."""
    return posixpath.join(output_dir, job, f"attempt-{attempt}")


def results(old: Results | None, storage: Storage, spec: YOLOTrainingJobSpec, job: str,
            attempt: int, reports: Iterable[feedback.PodReport]) -> Results:
    """status.results: where results live and where the current attempt picks up (pure).
    Until the current attempt reports, its resume point is the newest checkpoint an earlier
    attempt reported; the trainer's own summary then says what it resumed from."""
    base = old or Results()
    path = attempt_path(spec.output_dir, job, attempt)
    new = base.model_copy(update={"storage": storage.description,
                                  "ephemeral": storage.ephemeral, "path": path})
    if base.path and base.path != path:  # a relaunch
        new = new.model_copy(update={
            "resume_from": base.checkpoint,
            "resume_epoch": base.epochs_done if base.checkpoint else None})
    mine = [r for r in reports if r.attempt in (None, attempt)]
    if not mine:
        return new
    best = max(mine, key=lambda r: r.epochs_done)
    update: dict[str, Any] = {
        "resume_from": best.resumed_from,
        "resume_epoch": best.start_epoch if best.resumed_from else None}
    if best.epochs_done > best.start_epoch:  # this attempt saved epochs of its own
        update.update(epochs_done=best.epochs_done,
                      checkpoint=posixpath.join(path, "weights", "last.pt"))
    return new.model_copy(update=update)


def note(st: YOLOTrainingJobStatus, storage: Storage, spec: YOLOTrainingJobSpec, job: str,
         generation: int, now: str) -> None:
    """At launch: the ResultsPersistent condition and where this attempt writes."""
    from yolofit.operator.status import set_condition  # status -> launch -> storage

    st.conditions = set_condition(
        st.conditions, "ResultsPersistent", "False" if storage.ephemeral else "True",
        "EphemeralOutputs" if storage.ephemeral else "OutputsOnVolume",
        EPHEMERAL_MESSAGE if storage.ephemeral else storage.description, generation, now)
    st.results = results(st.results, storage, spec, job, st.attempt, [])
