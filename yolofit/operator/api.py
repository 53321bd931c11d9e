"""The yolofit.io/v1alpha1 API: YOLOTrainingJob and GPUCapacityPolicy.

These pydantic models are the one schema source. The CRDs in deploy/crds are generated
from them (`yolofit crds`, see crds.py), the webhooks and handlers parse objects with them,
and `Field(description=...)` is what `kubectl explain` shows. Field names are camelCase on
the wire (aliases) and snake_case in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "yolofit.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Phase = Literal["Pending", "Profiling", "Queued", "Admitted", "Running", "Succeeded", "Failed"]
PHASES: tuple[str, ...] = ("Pending", "Profiling", "Queued", "Admitted", "Running",
                           "Succeeded", "Failed")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
AmpPolicy = Literal["auto", "fp16", "bf16", "off"]
AmpMode = Literal["fp16", "bf16", "off"]
OptimizerName = Literal["auto", "SGD", "AdamW", "MuSGD"]
Task = Literal["detect", "segment", "pose", "obb", "classify"]


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused (the apiserver prunes them anyway)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The object as the API stores it: camelCase keys, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- YOLOTrainingJob --------------------------------------------------------------------------

class GpuRequest(Model):
    nodes: int = Field(1, ge=1, le=512, description="Number of pods (nodes) of the job; one "
                       "pod per node, each a DDP node in the PyTorchJob sense.")
    per_node: int = Field(1, ge=1, le=16, description="GPUs per pod (nvidia.com/gpu limit); "
                          "each pod runs one DDP rank per GPU.")


class Resources(Model):
    cpu: str = Field("4", description="CPU request and limit of each pod (quantity, e.g. 8).")
    memory: str = Field("16Gi", description="Memory request and limit of each pod "
                        "(quantity, e.g. 32Gi).")
    shm: str = Field("8Gi", description="Size of the in-memory /dev/shm volume for dataloader "
                     "workers.")


class Plan(Model):
    """What admission decided: the fitted configuration the pods run with."""

    gpu_class: str = Field(description="GPU class the job is placed on.")
    nodes: int = Field(ge=1, description="Pods (DDP nodes).")
    gpus_per_node: int = Field(ge=1, description="GPUs per pod.")
    gpus: int = Field(ge=1, description="Total GPUs (nodes x gpusPerNode), the world size.")
    batch_per_gpu: int = Field(ge=1, description="Images per GPU per optimizer micro-step.")
    accumulate: int = Field(ge=1, description="Gradient accumulation steps; batchPerGpu x "
                            "gpus x accumulate is the nominal batch.")
    amp: AmpMode = Field(description="Mixed precision mode chosen: fp16, bf16 or off.")
    checkpointing: bool = Field(False, description="Activation checkpointing on.")
    imgsz: int = Field(ge=32, description="Training image size (may be reduced from "
                       "spec.imgsz when the policy allows it).")
    predicted_allocated_bytes: int = Field(0, ge=0, description="Predicted peak "
                                           "torch.cuda.max_memory_allocated per GPU.")
    predicted_reserved_bytes: int = Field(0, ge=0, description="Predicted peak "
                                          "max_memory_reserved per GPU.")
    predicted_device_bytes: int = Field(0, ge=0, description="Predicted peak device memory "
                                        "per GPU (reserved + CUDA context).")
    usable_bytes: int = Field(0, ge=0, description="Usable memory of one GPU of the class "
                              "after headroom.")
    utilisation: float = Field(0.0, ge=0, description="predictedDeviceBytes / usableBytes.")
    estimate: str = Field("", description="predictedDeviceBytes, human readable.")
    margin: float = Field(0.0, ge=0, description="Learned safety margin applied for this "
                          "model and class (fraction of the estimate), from earlier OOMs.")
    breakdown: dict[str, int] = Field(default_factory=dict, description="Predicted bytes "
                                      "per component (weights, gradients, activations, ...).")
    reason: str = Field("", description="Why this plan was chosen, in words.")
    profile: str = Field("", description="Id of the memory profile the plan came from.")
    backend: Literal["device-plugin", "mig", "dra", "hami", "kai"] = Field(
        "device-plugin", description="How the GPUs are requested: device-plugin (whole "
        "GPUs), mig (a MIG slice), dra (a ResourceClaim with a memory selector), hami "
        "(nvidia.com/gpumem) or kai (KAI's gpu-memory annotation).")
    slice: str = Field("", description="What each pod gets, e.g. a100-80gb/1g.10gb, "
                       "gpu.nvidia.com >= 9216Mi, t4/hami 6144Mi.")
    requested_bytes: int = Field(0, ge=0, description="Memory per GPU asked of the backend: "
                                 "the card or MIG slice, or the prediction plus headroom "
                                 "for dra, hami and kai.")
    requested: str = Field("", description="requestedBytes, human readable.")
    task: str = Field("", description="Ultralytics task planned and trained (spec.task, or "
                      "the model's own task).")
    objects_per_image: int = Field(0, ge=0, description="Most objects per image the plan "
                                   "assumed (spec.maxObjectsPerImage or the policy default); "
                                   "the trainer stops before its first step when the data "
                                   "holds more (exit reason data-denser).")
    mean_objects_per_image: int = Field(0, ge=0, description="Mean objects per image the "
                                        "plan assumed (spec.meanObjectsPerImage, else the "
                                        "policy's defaultMeanObjectsPerImage, at most "
                                        "objectsPerImage): it sizes the loss terms that "
                                        "follow the labels (segment masks, keypoints). The "
                                        "trainer stops before its first step when the "
                                        "training split's mean is higher (data-denser). "
                                        "0: the plan does not depend on it (e.g. detection, "
                                        "whose labels all count at the densest image).")


class YOLOTrainingJobSpec(Model):
    """What to train and on how many GPUs; admission fills `plan`."""

    model: str = Field(min_length=1, max_length=253, description="Architecture the plan is "
                       "made for: an Ultralytics model such as yolov8s or yolo11m-seg, a "
                       "model YAML, or a checkpoint named like an Ultralytics release "
                       "(/data/yolo11m.pt: its file name is the architecture, the file the "
                       "weights). A checkpoint of another name (best.pt) goes in weights.")
    weights: str | None = Field(None, min_length=1, max_length=1024, description="Checkpoint "
                                "to start from, an absolute path inside one of volumeMounts "
                                "(e.g. /data/runs/best.pt); model gives its architecture. "
                                "Before its first step the trainer reads the checkpoint and "
                                "stops (exit reason model-differs) if it is bigger than "
                                "planned.")
    data: str = Field(min_length=1, description="Dataset YAML path inside a mounted volume, "
                      "e.g. /data/coco.yaml (classify: the dataset directory).")
    task: Task | None = Field(None, description="Ultralytics task: detect, segment, pose, "
                              "obb or classify. Default: the model's own task (its YAML "
                              "head, or the -seg/-pose/-obb/-cls suffix of its name); a task "
                              "that disagrees with the model is refused.")
    classes: int = Field(80, ge=1, le=100000, description="Number of classes (nc) of the "
                         "dataset; the memory profile depends on it.")
    imgsz: int | None = Field(None, ge=32, le=4096, multiple_of=32, description="Training "
                              "image size in pixels (multiple of 32). Default: what "
                              "Ultralytics trains the task at, 640, and 224 for classify.")
    epochs: int = Field(100, ge=1, le=100000, description="Training epochs.")
    nbs: int = Field(64, ge=1, le=65536, description="Nominal batch: images per optimizer "
                     "step across all GPUs; the plan keeps it whatever batch fits per GPU.")
    amp: AmpPolicy = Field("auto", description="Mixed precision policy: auto picks bf16 "
                           "where the class supports it, else fp16; off forces fp32.")
    optimizer: OptimizerName = Field("auto", description="Ultralytics optimizer; auto lets "
                                     "Ultralytics choose (AdamW or MuSGD) as `yolo train` "
                                     "does, and is planned as AdamW, whose state is the "
                                     "larger of the two.")
    gpus: GpuRequest = Field(default_factory=GpuRequest, description="Nodes x GPUs per node.")
    gpu_class: str | None = Field(None, description="Pin a GPU class; otherwise the first "
                                  "class in the policy's preference order that fits.")
    max_objects_per_image: int | None = Field(None, ge=1, le=10000, description="Most "
                                              "labelled objects in one image (memory hint); "
                                              "default from the policy.")
    mean_objects_per_image: int | None = Field(None, ge=1, le=10000, description="Mean "
                                               "labelled objects per image of the training "
                                               "split, rounded up (`yolofit data stats` "
                                               "mean/img; memory hint for segment and pose "
                                               "loss terms); at most maxObjectsPerImage. "
                                               "Default from the policy "
                                               "(defaultMeanObjectsPerImage).")
    image: str = Field("ghcr.io/yolofit/trainer:0.1.0", description="Trainer container "
                       "image (entrypoint `yolofit train`).")
    resources: Resources = Field(default_factory=Resources, description="CPU and memory of "
                                 "each pod.")
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="Pod volumes "
                                          "(core/v1 Volume) holding data and outputs.")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, description="Mounts "
                                                "(core/v1 VolumeMount) of the trainer "
                                                "container.")
    output_dir: str = Field("/runs", description="Where the trainer writes runs "
                            "(Ultralytics project dir); mount a volume there to keep them.")
    args: dict[str, Any] = Field(default_factory=dict, description="Extra Ultralytics train "
                                 "arguments (lr0, mosaic, ...), checked against Ultralytics' "
                                 "own argument names; those the plan sets are refused.")
    plan: Plan | None = Field(None, description="Set by yolofit admission (webhook or "
                              "operator); values written by users are replaced.")


class Condition(Model):
    type: str = Field(description="Admitted, Launched, Ready, Completed, Failed, Profiled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="metadata.generation this was computed "
                                     "from.")


class RankMeasurement(Model):
    rank: int = Field(ge=0, description="Global rank (node rank when one summary per pod).")
    pod: str = Field("", description="Pod that reported it.")
    memory_kind: Literal["cuda", "host-rss"] = Field("cuda", description="cuda = VRAM; "
                                                     "host-rss = CPU peak RSS (not VRAM).")
    peak_allocated_bytes: int = Field(0, ge=0, description="max_memory_allocated.")
    peak_reserved_bytes: int = Field(0, ge=0, description="max_memory_reserved.")
    device_total_bytes: int = Field(0, ge=0, description="Peak device memory used by the "
                                    "process (reserved + context).")
    steps: int = Field(0, ge=0, description="Optimizer micro-steps run.")
    images_per_second: float = Field(0.0, ge=0, description="Throughput of the rank.")
    exit_reason: str = Field("", description="completed, oom, error, data-missing, "
                             "data-denser, model-differs or terminated.")
    message: str = Field("", description="Trainer's message.")


class Measured(Model):
    ranks: list[RankMeasurement] = Field(default_factory=list, description="Per-rank "
                                         "summaries from the pods' termination messages.")
    max_peak_bytes: int = Field(0, ge=0, description="Largest device total over ranks "
                                "(reserved where the total is unknown).")
    max_peak: str = Field("", description="maxPeakBytes, human readable.")
    estimate_bytes: int = Field(0, ge=0, description="The plan's predicted device bytes.")
    relative_error: float | None = Field(None, description="(measured - estimate) / "
                                         "estimate; CUDA only.")


ReplanCause = Literal["OutOfMemory", "DataDenser", "ModelDiffers"]


class Replan(Model):
    attempt: int = Field(ge=1, description="Attempt number the new plan runs as.")
    cause: ReplanCause = Field("OutOfMemory", description="OutOfMemory (CUDA OOM, counted "
                               "against the policy's maxReplans), DataDenser (the pods "
                               "measured more objects per image than the plan assumed) or "
                               "ModelDiffers (the checkpoint is another architecture or nc "
                               "than the plan assumed); only OutOfMemory counts as an OOM.")
    reason: str = Field(description="Why: e.g. rank 1 ran out of memory at batch 16.")
    from_batch_per_gpu: int = Field(ge=1, description="Batch per GPU before.")
    to_batch_per_gpu: int = Field(ge=1, description="Batch per GPU after.")
    accumulate: int = Field(ge=1, description="Accumulation after.")
    checkpointing: bool = Field(False, description="Checkpointing after.")
    time: str = Field(description="When (RFC 3339).")


class ModelFound(Model):
    """The architecture a checkpoint turned out to be (trainer exit reason model-differs)."""

    model: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                       description="Model name the checkpoint was built from, e.g. yolo11l.")
    nc: int = Field(ge=1, le=100000, description="Number of classes of its head.")


class MeasuredInputs(Model):
    """Plan inputs the job's pods measured, where they differ from what admission assumed.
    Every later plan of the job (re-plans after OOM, requeues) is made with them: they win
    over spec.maxObjectsPerImage, spec.model, spec.classes and the policy's defaults."""

    objects_per_image: int | None = Field(None, ge=1, description="Most labelled objects "
                                          "in one training image, measured by the trainer "
                                          "from its label cache (exit reason data-denser); "
                                          "never lowered by a later report.")
    mean_objects_per_image: int | None = Field(None, ge=0, description="Mean labelled "
                                               "objects per training image, rounded up, "
                                               "measured by the trainer with the densest "
                                               "(exit reason data-denser); planned "
                                               "instead of spec.meanObjectsPerImage and the "
                                               "policy default; never lowered by a later "
                                               "report.")
    model: str | None = Field(None, description="Architecture of the checkpoint the job "
                              "trains from (exit reason model-differs), planned instead of "
                              "spec.model.")
    classes: int | None = Field(None, ge=1, description="nc of that checkpoint, planned "
                                "instead of spec.classes.")
    source: str = Field("", description="Pod whose summary reported the last figure.")
    attempt: int = Field(0, ge=0, description="Attempt whose pods measured it.")
    time: str = Field("", description="When it was recorded (RFC 3339).")


class KueueStatus(Model):
    """Where the job stands in Kueue, when Kueue admits it (see `kubectl get workload`)."""

    queue_name: str = Field("", description="Kueue LocalQueue the job's pods are queued in.")
    workload: str = Field("", description="Name of the Kueue Workload of the job's pod group "
                          "(same namespace): `kubectl get workload -n <ns> <name>`.")
    workload_uid: str = Field("", description="UID of that Workload when last seen.")
    cluster_queue: str = Field("", description="ClusterQueue that reserved quota.")
    flavor: str = Field("", description="ResourceFlavor(s) Kueue assigned.")
    quota_reserved: bool = Field(False, description="Kueue reserved quota for the job.")
    admitted: bool = Field(False, description="Kueue admitted the job (the go signal).")
    evictions: int = Field(0, ge=0, description="Evictions counted on the Workload when last "
                           "seen (each one answered by a new attempt).")
    restarts: int = Field(0, ge=0, description="Gang restarts after Kueue evictions.")
    last_eviction: str = Field("", description="Reason and message of the last eviction.")


class Results(Model):
    """Where the job's outputs live and where the current attempt picks up."""

    storage: str = Field("", description="What holds outputDir: persistentVolumeClaim "
                         "<name> (made per job from the policy's outputs), a volume of the "
                         "spec, or emptyDir (ephemeral).")
    ephemeral: bool = Field(False, description="True when results are lost with the pods.")
    path: str = Field("", description="Directory of the current attempt: "
                      "<outputDir>/<job>/attempt-<n>; earlier attempts' directories stay.")
    resume_from: str = Field("", description="Checkpoint the current attempt resumes from "
                             "(an earlier attempt's weights/last.pt); empty for a fresh start.")
    resume_epoch: int | None = Field(None, ge=0, description="Epochs already trained that the "
                                     "current attempt does not train again (it starts at "
                                     "this 0-based epoch); unknown until reported.")
    epochs_done: int = Field(0, ge=0, description="Epochs with a checkpoint on the volume, "
                             "as last reported by the trainer.")
    checkpoint: str = Field("", description="Newest checkpoint reported: the last.pt a "
                            "relaunch resumes from.")


class Restart(Model):
    attempt: int = Field(ge=1, description="Attempt number the restarted gang runs as.")
    reason: str = Field(description="CamelCase cause: Disrupted (eviction, drain, "
                        "preemption, node loss, SIGTERM), WorkerDeleted, Unschedulable.")
    message: str = Field("", description="Which pod and what happened to it.")
    time: str = Field(description="When (RFC 3339).")


class YOLOTrainingJobStatus(Model):
    phase: Phase = Field("Pending", description="Pending, Profiling, Queued, Admitted, "
                         "Running, Succeeded or Failed.")
    message: str = Field("", description="Why the job is in its phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions per "
                                        "Kubernetes API conventions.")
    plan: Plan | None = Field(None, description="The plan the current pods run with.")
    measured: Measured | None = Field(None, description="Measured peaks from the trainer.")
    attempt: int = Field(0, ge=0, description="Launch attempt: increases on every relaunch "
                         "of new pods (OOM re-plan, gang restart, requeue).")
    replans: list[Replan] = Field(default_factory=list, description="Re-plans so far: "
                                  "after an OOM, or after the pods measured denser data or "
                                  "a bigger model than the plan assumed (see cause).")
    measured_inputs: MeasuredInputs | None = Field(None, description="Plan inputs the pods "
                                                   "measured (objects per image, the "
                                                   "checkpoint's model and nc); every later "
                                                   "plan of the job uses them.")
    restarts: list[Restart] = Field(default_factory=list, description="Whole-gang restarts "
                                    "after disruptions so far (the failure policy).")
    admitted: bool = Field(False, description="Counted against the namespace's GPU quota.")
    workers: list[str] = Field(default_factory=list, description="Pod names of the current "
                               "attempt.")
    observed_generation: int = Field(0, description="metadata.generation last reconciled.")
    kueue: KueueStatus | None = Field(None, description="Kueue's view of the job, when Kueue "
                                      "admits it (policy kueueQueue or the job label "
                                      "kueue.x-k8s.io/queue-name).")
    results: Results | None = Field(None, description="Where results live and the resume "
                                    "point of the current attempt.")
    start_time: str | None = Field(None, description="When pods were launched.")
    completion_time: str | None = Field(None, description="When the job finished.")


class YOLOTrainingJob(Model):
    """Only the parts the operator parses; metadata stays a plain dict."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    spec: YOLOTrainingJobSpec
    status: YOLOTrainingJobStatus = Field(default_factory=YOLOTrainingJobStatus)


# --- GPUCapacityPolicy ------------------------------------------------------------------------

class BackendSpec(Model):
    kind: Literal["device-plugin", "dra", "hami", "kai"] = Field(
        "device-plugin", description="device-plugin: whole GPUs (nvidia.com/gpu); dra: a "
        "ResourceClaim per pod asking for a device with the memory the plan needs; hami: "
        "nvidia.com/gpumem sized from the plan; kai: KAI Scheduler's gpu-memory annotation.")
    device_class_name: str = Field("gpu.nvidia.com", min_length=1, description="dra: the "
                                   "DeviceClass of the claim (the NVIDIA DRA driver "
                                   "publishes gpu.nvidia.com and mig.nvidia.com).")
    scheduler_name: str = Field("kai-scheduler", min_length=1, description="kai: the pods' "
                                "schedulerName.")
    queue: str = Field("default-queue", min_length=1, description="kai: the KAI queue "
                       "(label kai.scheduler/queue on the pods).")


class GpuClassSpec(Model):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                      description="Class name used in plans and gpuClass, e.g. a100-80gb.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels "
                                          "that select this class, e.g. "
                                          "nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB.")
    memory: str | None = Field(None, description="Memory of one GPU (e.g. 80GiB); default "
                               "from the nodes' nvidia.com/gpu.memory label.")
    usable_memory: str | None = Field(None, description="Override of the usable memory of "
                                      "one GPU (e.g. 70GiB); default memory x (1 - headroom).")
    headroom_percent: float | None = Field(None, ge=0, le=90, description="Memory kept "
                                           "free per GPU, percent; default the policy's.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations "
                                              "(core/v1 Toleration) added to this class's "
                                              "pods.")
    bf16: bool | None = Field(None, description="Whether the class supports bf16; default "
                              "from the GPU's compute capability (>= 8.0).")
    mig_profile: str | None = Field(None, pattern=r"^[0-9]+[cg][.0-9a-z+]*$",
                                    description="A MIG slice (e.g. 1g.10gb) of the nodes the "
                                    "nodeSelector picks; memory from GFD's "
                                    "nvidia.com/mig-<profile>.memory label.")
    backend: BackendSpec = Field(default_factory=BackendSpec, description="How pods of this "
                                 "class request GPUs and memory.")


DEFAULT_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "emptyDir", "csi")


class PodRules(Model):
    """What a job may put into the pods the operator creates for it (the operator creates
    pods a tenant may not be allowed to create directly, so admission checks them)."""

    allowed_image_prefixes: list[str] = Field(default_factory=list, description="Trainer "
                                              "images must start with one of these (e.g. "
                                              "registry.example.com/ml/); empty = any image.")
    allowed_volume_types: list[str] = Field(default_factory=lambda: list(DEFAULT_VOLUME_TYPES),
                                            description="core/v1 Volume types jobs may use "
                                            "(keys such as persistentVolumeClaim, hostPath, "
                                            "secret); hostPath and secret only if listed.")


class NamespaceRule(Model):
    namespace: str = Field(min_length=1, description="Namespace name, or * for all others.")
    pods: PodRules | None = Field(None, description="Pod rules for this namespace; default "
                                  "the policy's spec.pods.")
    allowed_classes: list[str] = Field(default_factory=list, description="Classes jobs of "
                                       "this namespace may use; empty = all.")
    max_gpus_per_job: int | None = Field(None, ge=1, description="Largest job in GPUs.")
    max_gpus_admitted: int | None = Field(None, ge=0, description="GPUs admitted at once; "
                                          "more waits Queued.")
    kueue_queue: str | None = Field(None, min_length=1, max_length=63, description="Kueue "
                                    "LocalQueue for this namespace's jobs: Kueue admits them "
                                    "(each job a plain pod group) and maxGpusAdmitted is not "
                                    "applied; the job label kueue.x-k8s.io/queue-name does the "
                                    "same for one job.")


class Levers(Model):
    amp: bool = Field(True, description="The planner may turn on mixed precision.")
    checkpointing: bool = Field(True, description="The planner may use activation "
                                "checkpointing.")
    imgsz_reduction: bool = Field(False, description="The planner may reduce imgsz.")
    min_imgsz: int = Field(320, ge=32, description="Smallest imgsz the planner may reduce to.")


class OutputStorage(Model):
    """The volume yolofit gives each job's outputDir when the job mounts none there."""

    size: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$",
                             description="Size of the PersistentVolumeClaim made per "
                             "job (quantity, e.g. 20Gi). Unset: an emptyDir, whose results "
                             "are lost with the pods (the job shows a ResultsPersistent=False "
                             "condition).")
    storage_class_name: str | None = Field(None, description="StorageClass of the claim; "
                                           "unset = the cluster's default class.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        "ReadWriteOnce", description="ReadWriteMany mounts the claim in every pod; otherwise "
        "only in pod 0, where rank 0 writes checkpoints (other ranks receive the resume "
        "checkpoint over the process group).")
    retain: bool = Field(False, description="Keep the claim after the job is deleted "
                         "(default: it is owned by the job and deleted with it).")


class FailurePolicy(Model):
    """What happens to a job when a pod fails, is disrupted or cannot start (JobSet-style:
    the gang lives and dies as one)."""

    max_restarts: int = Field(3, ge=0, le=100, description="Whole-gang restarts after "
                              "disruptions (eviction, drain, preemption, node loss, SIGTERM, "
                              "a deleted worker) before the job fails. A trainer error (exit "
                              "1-127, e.g. 2 for bad data) fails at once; an OOM re-plans "
                              "(maxReplans).")
    restart_backoff_seconds: float = Field(10.0, ge=0, le=3600, description="Wait before "
                                           "relaunching a restarted gang; doubles with each "
                                           "restart.")
    max_restart_backoff_seconds: float = Field(300.0, ge=0, le=86400, description="Cap of "
                                               "the restart backoff.")
    pod_start_timeout_seconds: float = Field(600.0, gt=0, le=86400, description="A pod "
                                             "placed but not started (ImagePullBackOff, "
                                             "CreateContainerConfigError, a missing volume, "
                                             "Pending) for this long fails the job, and all "
                                             "its pods are deleted.")
    unschedulable_timeout_seconds: float = Field(900.0, gt=0, le=86400, description="Pods "
                                                 "the scheduler cannot place for this long "
                                                 "are deleted and the job goes back to "
                                                 "Queued (quota released) with the "
                                                 "scheduler's reason.")


class GPUCapacityPolicySpec(Model):
    """GPU classes, per-namespace rules and the levers the planner may use."""

    classes: list[GpuClassSpec] = Field(default_factory=list, description="GPU classes; "
                                        "empty = discovered from GPU feature discovery labels.")
    preference: list[str] = Field(default_factory=list, description="Class preference order "
                                  "for unpinned jobs; default smallest memory first.")
    namespaces: list[NamespaceRule] = Field(default_factory=list, description="Per-namespace "
                                            "rules; a namespace with no rule (and no * rule) "
                                            "gets the operator's default limits "
                                            "(settings defaultMaxGpusPerJob and "
                                            "defaultMaxGpusAdmitted), never unlimited.")
    levers: Levers = Field(default_factory=Levers, description="What the planner may change.")
    pods: PodRules = Field(default_factory=PodRules, description="Images and volume types "
                           "jobs may use, unless a namespace rule sets its own.")
    mig_preference: Literal["smallest-first", "after-whole-gpus", "off"] = Field(
        "smallest-first", description="Where MIG slices go in a single-rank job's class order: "
        "smallest-first tries the smallest slice that fits before whole GPUs, "
        "after-whole-gpus only when no whole GPU fits, off never. Multi-rank jobs never get "
        "a slice.")
    model_dirs: list[Annotated[str, Field(pattern=r"^/", min_length=2, max_length=1024)]] = \
        Field(default_factory=list, max_length=32, description="Directories of custom model "
              "YAMLs jobs may name in spec.model (absolute paths in the operator's pod; mount "
              "the same files at the same path into the jobs' pods). Admission reads no other "
              "file a job names: spec.model is a shipped architecture (yolo11m, "
              "yolo11s-seg.yaml), a checkpoint named like one, or a YAML under one of these.")
    default_objects_per_image: int = Field(100, ge=1, description="Objects per image assumed "
                                           "when a job gives no maxObjectsPerImage.")
    default_mean_objects_per_image: int = Field(
        16, ge=1, description="Mean objects per image assumed when a job gives no "
        "meanObjectsPerImage (at most the objects per image in use). 16 is about twice "
        "COCO's 7.3 and above the stated mean of 10 of the 13 field data sets behind "
        "benchmarks/RESULTS.md (1-13; the dense ones hold 56-71): denser data is measured "
        "by the trainer before its first step and re-planned once (data-denser).")
    default_headroom_percent: float = Field(10.0, ge=0, le=90, description="Headroom for "
                                            "classes that do not set one.")
    max_replans: int = Field(3, ge=0, le=20, description="OOM re-plans per job before it "
                             "fails (re-plans for denser data or a bigger model than "
                             "assumed do not count).")
    outputs: OutputStorage = Field(default_factory=OutputStorage, description="Storage for "
                                   "jobs' outputDir: a PersistentVolumeClaim per job when a "
                                   "size is given, else an emptyDir.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="Gang "
                                          "restarts after disruptions, and how long pods may "
                                          "fail to start or to be placed.")


class FleetClass(Model):
    name: str = Field(description="Class name.")
    product: str = Field("", description="nvidia.com/gpu.product.")
    nodes: int = Field(0, ge=0, description="Nodes of this class.")
    gpus: int = Field(0, ge=0, description="GPUs of this class in the fleet.")
    memory: str = Field("", description="Memory of one GPU.")
    usable: str = Field("", description="Usable memory after headroom.")
    bf16: bool = Field(False, description="bf16 support.")


class LearnedMargin(Model):
    namespace: str = Field("", description="Namespace the margin was learned in (margins "
                           "are not shared between namespaces).")
    model: str = Field(description="Model name.")
    gpu_class: str = Field(description="GPU class.")
    margin: float = Field(ge=0, description="Fraction added to estimates.")
    observations: int = Field(0, ge=0, description="OOMs/measurements it was learned from.")


class GPUCapacityPolicyStatus(Model):
    fleet: list[FleetClass] = Field(default_factory=list, description="Discovered fleet.")
    learned_margins: list[LearnedMargin] = Field(default_factory=list, description="Margins "
                                                 "learned from OOMs (a copy; the operator "
                                                 "persists them in a ConfigMap).")
    observed_generation: int = Field(0, description="metadata.generation last seen.")


class GPUCapacityPolicy(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    spec: GPUCapacityPolicySpec = Field(default_factory=GPUCapacityPolicySpec)
    status: GPUCapacityPolicyStatus = Field(default_factory=GPUCapacityPolicyStatus)


# Fields of the job spec that change a plan. Everything else (args, image, volumes) does not.
PLAN_INPUTS = ("model", "classes", "imgsz", "nbs", "amp", "optimizer", "gpus", "gpu_class",
               "max_objects_per_image", "mean_objects_per_image")
