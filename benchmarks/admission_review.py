"""CPU time of one admission review in the webhook handlers (webhooks.respond, what the
admission server runs per request), with the model YAMLs parsed once per file version
(identity._read_config, the default) vs parsed on every review (as before).

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/admission_review.py [--reviews 300]

A CREATE of a YOLOTrainingJob per model below, mutate then validate, against the shipped
profiles and a fleet of T4 and H100 nodes; the two arms alternate review by review, in one
process, and each review's handling time is the median of its repeats. Medians and the
ratio are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("yolov8n", "yolo11s", "yolo11m-seg", "yolo11s-pose", "yolo26n")


def review(model: str, i: int) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": f"u{i}", "operation": "CREATE", "namespace": "team-a",
                        "object": {"apiVersion": "yolofit.io/v1alpha1",
                                   "kind": "YOLOTrainingJob",
                                   "metadata": {"name": f"j{i}", "namespace": "team-a"},
                                   "spec": {"model": model, "data": "/data/d.yaml",
                                            "epochs": 1,
                                            "gpus": {"nodes": 1, "perNode": 1}}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=int, default=300)
    args = parser.parse_args()
    from yolofit.estimator import identity
    from yolofit.estimator.profile import ProfileStore
    from yolofit.operator import policy
    from yolofit.operator.api import GPUCapacityPolicySpec
    from yolofit.operator.fleet import FleetNode
    from yolofit.operator.webhooks import Snapshot, respond

    t4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.memory": "15360"}
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}
    nodes = [FleetNode(f"t4-{i}", t4, 4) for i in range(4)] + [
        FleetNode(f"h100-{i}", h100, 8) for i in range(2)]
    spec = policy.with_default_rule(GPUCapacityPolicySpec.model_validate({"namespaces": [
        {"namespace": "team-a", "allowedClasses": ["t4", "h100-80gb"], "maxGpusPerJob": 8,
         "maxGpusAdmitted": 8}]}), policy.default_rule(16, 64))
    snap = Snapshot(policy=spec, classes=policy.effective_classes(spec, nodes),
                    store=ProfileStore())
    times: dict[str, list[float]] = {"parsed once per file": [], "parsed every review": []}
    allowed = 0
    for i in range(args.reviews):
        for arm, samples in times.items():
            body = review(MODELS[i % len(MODELS)], i)
            runs = []
            for _ in range(3):
                if arm == "parsed every review":
                    identity._CONFIGS.clear()
                start = time.perf_counter()
                _, mutated = respond("mutate", body, snap)
                _, validated = respond("validate", body, snap)
                runs.append(time.perf_counter() - start)
            samples.append(statistics.median(runs))
            allowed += bool(validated["response"]["allowed"])
    old = statistics.median(times["parsed every review"])
    new = statistics.median(times["parsed once per file"])
    print(f"{args.reviews} CREATE reviews x 2 arms (mutate + validate each), models "
          f"{', '.join(MODELS)}; allowed {allowed} of {2 * args.reviews}\n")
    print("| arm | median ms (mutate + validate) | p90 ms |\n|---|---|---|")
    for arm, samples in times.items():
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(f"| {arm} | {1e3 * statistics.median(samples):.2f} | {1e3 * p90:.2f} |")
    print(f"\nonce / every: {new / old:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
