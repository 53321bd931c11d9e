"""The operator on the real sandbox, driven as in production: `yolofit operator` as a
subprocess with its webhooks registered at https://127.0.0.1:<port>, kubectl applies,
kwok nodes standing in for GPU nodes, pods finished through the sandbox's kwok stages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opfixtures import summary
from sandboxjobs import apply, finish_all, get_job, job_yaml, phase_is, pods_of, running_pods

from yolofit.sandbox.testing import finish_pod, wait_for

pytestmark = pytest.mark.integration
GiB = 2**30


def test_apply_returns_plan_pods_run_and_job_succeeds(operator: Any, kubectl: Any, kube: Any,
                                                      namespace: str) -> None:
    out = apply(kubectl, job_yaml("fit", namespace, args={"lr0": 0.02}))
    plan = out["spec"]["plan"]  # the apply response already carries the plan
    assert plan["gpuClass"] == "t4" and plan["gpus"] == 8
    assert plan["batchPerGpu"] * plan["gpus"] * plan["accumulate"] == 64
    assert plan["amp"] == "fp16" and plan["predictedDeviceBytes"] <= plan["usableBytes"]

    pods = wait_for(running_pods(kube, namespace, "fit", 2), 30, what="2 running pods")
    assert [p.metadata.name for p in pods] == ["fit-worker-0", "fit-worker-1"]
    for rank, pod in enumerate(pods):
        assert pod.spec.node_name.startswith("t4-")
        assert pod.spec.node_selector == {"nvidia.com/gpu.product": "Tesla-T4"}
        assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)
        assert not pod.spec.scheduling_gates
        c = pod.spec.containers[0]
        assert c.resources.limits["nvidia.com/gpu"] == "4"
        env = {e.name: e.value for e in c.env}
        assert env["MASTER_ADDR"] == f"fit-worker-0.fit.{namespace}.svc"
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "23456"
        assert env["WORLD_SIZE"] == "8" and env["RANK"] == env["PET_NODE_RANK"] == str(rank)
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4"
        assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
        cfg = json.loads(env["YOLOFIT_TRAIN_CONFIG"])
        assert cfg["batch_per_gpu"] == plan["batchPerGpu"] and cfg["args"] == {"lr0": 0.02}
        assert pod.metadata.owner_references[0].kind == "YOLOTrainingJob"
        assert pod.metadata.annotations["prometheus.io/scrape"] == "true"
    svc = kube.read_namespaced_service("fit", namespace)
    assert svc.spec.cluster_ip == "None"
    wait_for(phase_is(kubectl, namespace, "fit", "Running"), 20, what="job Running")

    finish_all(kube, namespace, "fit", peak=4 * GiB)
    job = wait_for(phase_is(kubectl, namespace, "fit", "Succeeded"), 30, what="job Succeeded")
    measured = job["status"]["measured"]
    assert [r["rank"] for r in measured["ranks"]] == [0, 1]
    assert measured["maxPeakBytes"] == 4 * GiB + 1
    assert measured["relativeError"] == pytest.approx(
        (4 * GiB + 1 - plan["predictedDeviceBytes"]) / plan["predictedDeviceBytes"], abs=1e-3)
    conds = {c["type"]: c for c in job["status"]["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Admitted"]["status"] == "True"
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]
    table = kubectl("get", "ytj", "-n", namespace).stdout
    assert "BATCH/GPU" in table and "4.0 GiB" in table and "Succeeded" in table
    assert 'yolofit_estimate_error_ratio_count{gpu_class="t4"}' in operator.metrics()


def test_kubectl_explain_shows_the_model_descriptions(operator: Any, kubectl: Any) -> None:
    out = kubectl("explain", "ytj.spec.gpus.perNode").stdout
    assert "GPUs per pod (nvidia.com/gpu limit)" in out
    out = kubectl("explain", "ytj.spec").stdout
    assert "admission fills `plan`" in out and "Ultralytics model" in out


def test_impossible_job_is_refused_with_the_numbers(operator: Any, kubectl: Any,
                                                    namespace: str, policy: Any) -> None:
    policy([{"namespace": namespace, "allowedClasses": ["t4"]}])
    result = apply(kubectl, job_yaml("huge", namespace, model="yolov8x", nodes=1, per_node=1),
                   check=False)
    assert result.returncode != 0
    err = result.stderr
    assert "denied the request" in err and "yolov8x" in err and "GiB" in err
    assert f"largest class allowed in namespace {namespace} (t4)" in err
    # The smallest class of the fleet that holds it is a MIG slice (a single-rank job).
    assert "it would fit on h100-80gb-mig-3g.40gb" in err
    fleet = kubectl("get", "gpucapacitypolicy", "default", "-o",
                    "jsonpath={.status.fleet[*].name}").stdout.split()
    assert fleet == ["a100-80gb-mig-1g.10gb", "h100-80gb-mig-1g.10gb", "t4",
                     "h100-80gb-mig-2g.20gb", "h100-80gb-mig-3g.40gb", "a100-80gb", "h100-80gb",
                     "h200"]  # discovered, smallest first


def test_malformed_spec_is_refused_by_the_schema(operator: Any, kubectl: Any,
                                                 namespace: str) -> None:
    result = apply(kubectl, job_yaml("bad", namespace, epochs=0, imgsz=641), check=False)
    assert result.returncode != 0
    assert "spec.epochs" in result.stderr and "spec.imgsz" in result.stderr


def test_unknown_ultralytics_argument_is_refused_by_name(operator: Any, kubectl: Any,
                                                         namespace: str) -> None:
    result = apply(kubectl, job_yaml("typo", namespace, args={"mosiac": 0.5}), check=False)
    assert result.returncode != 0
    assert "spec.args.mosiac" in result.stderr and "'mosaic'" in result.stderr


def test_pinned_class_not_allowed_is_refused(operator: Any, kubectl: Any, namespace: str,
                                             policy: Any) -> None:
    policy([{"namespace": namespace, "allowedClasses": ["t4"]}])
    result = apply(kubectl, job_yaml("pin", namespace, gpuClass="h200", nodes=1), check=False)
    assert result.returncode != 0
    assert "spec.gpuClass" in result.stderr and "not allowed" in result.stderr


def test_quota_queues_and_releases(operator: Any, kubectl: Any, kube: Any, namespace: str,
                                   policy: Any) -> None:
    policy([{"namespace": namespace, "maxGpusAdmitted": 8}])
    apply(kubectl, job_yaml("first", namespace))  # 8 GPUs
    wait_for(running_pods(kube, namespace, "first", 2), 30, what="first job's pods")
    apply(kubectl, job_yaml("second", namespace, nodes=1, per_node=4))
    job = wait_for(phase_is(kubectl, namespace, "second", "Queued"), 20, what="second Queued")
    assert "8 of 8 GPUs" in job["status"]["message"]
    assert not pods_of(kube, namespace, "second")
    finish_all(kube, namespace, "first")
    wait_for(phase_is(kubectl, namespace, "first", "Succeeded"), 30, what="first Succeeded")
    wait_for(running_pods(kube, namespace, "second", 1), 30, what="second job's pod after release")
    reasons = kubectl("get", "events", "-n", namespace, "-o",
                      "jsonpath={.items[*].reason}").stdout.split()
    assert "Queued" in reasons and "Admitted" in reasons


def test_deleting_a_job_removes_its_children(operator: Any, kubectl: Any, kube: Any,
                                             namespace: str) -> None:
    apply(kubectl, job_yaml("gone", namespace))
    wait_for(running_pods(kube, namespace, "gone", 2), 30, what="pods")
    kubectl("delete", "ytj", "-n", namespace, "gone", "--wait=true")
    wait_for(lambda: not pods_of(kube, namespace, "gone") and not kube.list_namespaced_service(
        namespace).items, 60, what="pods and Service garbage-collected")


def test_oom_replans_with_same_effective_batch(operator: Any, kubectl: Any, kube: Any,
                                               namespace: str) -> None:
    first = apply(kubectl, job_yaml("oom", namespace, nodes=2, per_node=1, nbs=64))
    before = first["spec"]["plan"]
    wait_for(running_pods(kube, namespace, "oom", 2), 30, what="pods")
    finish_pod(kube, namespace, "oom-worker-1", 88,
               message=summary(1, 15 * GiB, "oom", "CUDA out of memory"))
    job = wait_for(lambda: (j := get_job(kubectl, namespace, "oom"))["status"].get("attempt")
                   == 1 and j, 30, what="re-plan")
    after = job["status"]["plan"]
    assert after["batchPerGpu"] < before["batchPerGpu"]
    assert after["batchPerGpu"] * after["gpus"] * after["accumulate"] == 64  # = nbs
    assert after["accumulate"] > before["accumulate"]
    assert job["status"]["replans"][0]["fromBatchPerGpu"] == before["batchPerGpu"]
    pods = wait_for(running_pods(kube, namespace, "oom", 2), 60, what="relaunched pods")
    for p in pods:
        assert p.metadata.labels["yolofit.io/attempt"] == "1"
        cfg = json.loads(next(e.value for e in p.spec.containers[0].env
                              if e.name == "YOLOFIT_TRAIN_CONFIG"))
        assert cfg["batch_per_gpu"] == after["batchPerGpu"]
    reasons = kubectl("get", "events", "-n", namespace, "-o",
                      "jsonpath={.items[*].reason}").stdout.split()
    assert "OutOfMemoryReplan" in reasons
    margins = kubectl("get", "configmap", "-n", "yolofit-system", "yolofit-learned-margins",
                      "-o", "jsonpath={.data.margins\\.json}").stdout
    assert json.loads(margins)[f"{namespace}|yolov8n|t4"]["margin"] > 0  # per namespace
    finish_all(kube, namespace, "oom")
    wait_for(phase_is(kubectl, namespace, "oom", "Succeeded"), 30, what="job Succeeded")
    assert 'yolofit_replans_total{cause="OutOfMemory",gpu_class="t4"' in operator.metrics()


def test_missing_dataset_fails_the_job_with_the_message(operator: Any, kubectl: Any,
                                                        kube: Any, namespace: str) -> None:
    apply(kubectl, job_yaml("nodata", namespace, nodes=1, per_node=1))
    wait_for(running_pods(kube, namespace, "nodata", 1), 30, what="pod")
    finish_pod(kube, namespace, "nodata-worker-0", 2,
               message=summary(0, 0, "data-missing", "dataset /data/coco8.yaml not found"))
    job = wait_for(phase_is(kubectl, namespace, "nodata", "Failed"), 30, what="job Failed")
    assert "dataset /data/coco8.yaml not found" in job["status"]["message"]
    conds = {c["type"]: c for c in job["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "DataMissing"


def test_model_without_profile_is_profiled_off_the_request_path(
        operator: Any, kubectl: Any, kube: Any, namespace: str) -> None:
    # A class count between two shipped ones (yolov8m@640: nc 1, 7, 80) needs no trace: the
    # webhook plans it from their interpolation (server-side dry run: nothing is created).
    own = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                  input=job_yaml("own", namespace, model="yolov8m", nodes=1, per_node=1,
                                 classes=3))
    assert "|nc3|" in json.loads(own.stdout)["spec"]["plan"]["profile"]
    out = apply(kubectl, job_yaml("fresh", namespace, model="yolov8m", nodes=1, per_node=1,
                                  classes=90))  # above every shipped class count: a trace
    assert "plan" not in out["spec"]  # admitted without a plan: the webhook never traces
    wait_for(phase_is(kubectl, namespace, "fresh", "Profiling"), 20, what="Profiling")
    wait_for(running_pods(kube, namespace, "fresh", 1), 60, what="pod after profiling")
    job = get_job(kubectl, namespace, "fresh")
    assert job["spec"]["plan"]["profile"].startswith("yolov8m|")
