"""Operator settings: one typed class, every field documented. Environment variables are
prefixed YOLOFIT_OPERATOR_ (e.g. YOLOFIT_OPERATOR_WEBHOOK_PORT=9443); CLI flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from yolofit.units import parse_bytes


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YOLOFIT_OPERATOR_", extra="ignore")

    kubeconfig: str | None = Field(None, description="Kubeconfig path; default: in-cluster "
                                   "service account, else $KUBECONFIG / ~/.kube/config.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to serve; "
                                  "empty = the whole cluster.")
    operator_namespace: str = Field("yolofit-system", description="Where the operator keeps "
                                    "its state (the learned-margins ConfigMap).")
    policy_name: str = Field("default", description="GPUCapacityPolicy the operator applies; "
                             "without it classes are discovered from node labels.")
    margins_configmap: str = Field("yolofit-learned-margins", description="ConfigMap that "
                                   "persists learned margins per (model, class).")
    install_webhooks: bool = Field(False, description="Serve the admission webhooks and "
                                   "register the Mutating/ValidatingWebhookConfiguration.")
    webhook_mode: Literal["url", "service"] = Field("url", description="url: the apiserver "
                                                    "calls https://<webhook-host>:<port> "
                                                    "(sandbox, same host); service: through "
                                                    "a Service (in-cluster, the chart).")
    webhook_host: str = Field("127.0.0.1", description="Host in the webhook URL (url mode).")
    webhook_addr: str = Field("127.0.0.1", description="Address the webhook server listens "
                              "on (0.0.0.0 in-cluster).")
    webhook_port: int = Field(9443, ge=1, le=65535, description="Webhook HTTPS port.")
    webhook_service: str = Field("yolofit-webhook", description="Service name (service mode).")
    webhook_configuration: str = Field("yolofit.io", description="Name of the managed "
                                       "webhook configurations.")
    manage_webhook_configurations: bool = Field(True, description="Create and patch the "
                                                "Mutating/ValidatingWebhookConfiguration "
                                                "(the sandbox); false when something else "
                                                "owns them (the Helm chart), so the "
                                                "operator needs no RBAC on them.")
    cert_dir: Path = Field(Path("/tmp/yolofit-webhook-certs"), description="Webhook CA, "
                           "certificate and key; made when absent (or mounted, e.g. by "
                           "cert-manager).")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus /metrics port "
                              "(0 = off).")
    health_port: int = Field(8081, ge=0, le=65535, description="/healthz and /readyz port "
                             "(0 = off).")
    trainer_metrics_port: int = Field(9400, description="Port of each trainer pod's exporter.")
    queue_interval: float = Field(2.0, gt=0, description="Seconds between re-tries of Queued "
                                  "and Profiling jobs.")
    resync_interval: float = Field(30.0, gt=0, description="Seconds between full reconciles "
                                   "of every live job (a safety net for missed events).")
    relist_interval: float = Field(60.0, gt=0, description="Seconds between re-lists of jobs, "
                                   "pods and Services that prune from the cache what the "
                                   "apiserver no longer has (deletions missed in a watch gap).")
    gang_scheduling: Literal["auto", "gates"] = Field(
        "auto", description="How multi-pod jobs are placed all-or-nothing. auto: a PodGroup "
        "(scheduling.k8s.io/v1beta1, kube-scheduler's gang scheduling) where the cluster "
        "serves it, else scheduling gates lifted when a placement check says the whole gang "
        "fits; gates: always the latter (e.g. a scheduler without the gang plugin).")
    fleet_interval: float = Field(15.0, gt=0, description="Seconds between node listings for "
                                  "fleet discovery.")
    api_workers: int = Field(32, ge=1, description="Concurrent Kubernetes API requests.")
    profile_dir: Path | None = Field(None, description="Profile cache directory (default "
                                     "$YOLOFIT_PROFILE_DIR or ~/.cache/yolofit/profiles).")
    profile_builder: str = Field("yolofit.estimator.build:build_profile", description="module"
                                 ":function that traces a ProfileKey into a Profile; run in "
                                 "a subprocess, never on the webhook path.")
    trace_memory_budget: str | None = Field(None, description="Host memory one profile "
                                            "trace may use (e.g. 3GiB): its worker process "
                                            "is killed above it and the job fails with the "
                                            "reason. The chart sets it with the container's "
                                            "memory limit (profiling.memoryBudgetMiB). None: "
                                            "no budget.")
    trace_timeout: float = Field(1800.0, gt=0, description="Seconds one profile trace may "
                                 "take before its worker is stopped.")
    trace_workers: int = Field(1, ge=1, le=64, description="Profile traces at once, each in "
                               "its own worker under trace_memory_budget (and about one CPU "
                               "for its duration). The chart's memory limit counts the budget "
                               "once per worker (profiling.workers).")
    trace_server: bool = Field(True, description="Start the process trace workers fork "
                               "from, with the profile builder's modules (torch, Ultralytics) "
                               "imported, when this replica starts to lead (at startup when "
                               "standalone): a first estimate then does not import them (~8 s "
                               "on 2 cores). It holds ~700 MiB while idle; a standby holds "
                               "none. False: the first trace starts it.")
    peering: str | None = Field(None, description="kopf peering name for leader election "
                                "between replicas; None = standalone.")
    peering_priority: int | None = Field(None, ge=0, le=2**31 - 1, description="kopf peering "
                                         "priority of this replica (highest wins); default "
                                         "derived from $POD_NAME so replicas differ.")
    operator_username: str = Field("", description="The operator's Kubernetes username (e.g. "
                                   "system:serviceaccount:yolofit-system:yolofit): the "
                                   "webhooks' matchConditions skip its own writes. Empty: "
                                   "not skipped; the status policy (sandbox) asks the "
                                   "apiserver who the operator is.")
    default_max_gpus_per_job: int | None = Field(16, ge=1, description="Largest job in GPUs "
                                                 "in a namespace the policy has no rule for "
                                                 "(also when the policy is deleted).")
    default_max_gpus_admitted: int | None = Field(64, ge=0, description="GPUs admitted at "
                                                  "once in a namespace the policy has no "
                                                  "rule for (also when it is deleted).")
    monitoring_namespace: str = Field("monitoring", description="Namespace whose pods may "
                                      "scrape trainer metrics (each job's NetworkPolicy).")
    peering_lifetime: int = Field(60, ge=5, description="Seconds a replica's peering entry "
                                  "lives without a keepalive; a standby takes over this long "
                                  "after the leader dies.")
    log_level: Literal["DEBUG", "INFO", "WARNING"] = Field("INFO", description="Log level.")

    @field_validator("trace_memory_budget")
    @classmethod
    def _budget_is_a_size(cls, value: str | None) -> str | None:
        if value is not None and value.strip() not in ("", "0"):
            try:
                parse_bytes(value)
            except ValueError as exc:
                raise ValueError(f"trace_memory_budget: {exc}") from None
            return value.strip()
        return None

    @property
    def trace_memory_budget_bytes(self) -> int | None:
        return None if self.trace_memory_budget is None else parse_bytes(
            self.trace_memory_budget)
