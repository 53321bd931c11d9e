"""Structural CRD YAML generated from the pydantic models in api.py (the one schema source).

Pydantic's JSON schema uses `$defs`/`$ref`, `anyOf: [T, null]` for optionals and `title`s;
CRD schemas must be structural OpenAPI v3: every node typed, no `$ref`, no `anyOf` with
types. `structural()` inlines and rewrites; `crds()` wraps the result with names, scope,
printer columns and the status subresource. deploy/crds/*.yaml is its committed output and
a test fails when the two differ.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from yolofit.operator import api

_DROP = {"title", "$defs"}


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, inlined and made structural."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    return _rewrite(schema, defs)


def _rewrite(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _rewrite({**target, **extra}, defs)
    if "anyOf" in node:  # Optional[T] -> T (absent means unset; we never write null)
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']}")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        if merged.get("default", 0) is None:
            del merged["default"]
        return _rewrite(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _DROP:
            out.update(_rewrite_key(key, value, defs))
    if "properties" in out and out.get("additionalProperties") is False:
        del out["additionalProperties"]  # structural schemas forbid both; strict field
        # validation (kubectl's default) still refuses unknown fields by path.
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    _free_form(out)
    return out


def _rewrite_key(key: str, value: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if key == "properties":
        return {key: {k: _rewrite(v, defs) for k, v in value.items()}}
    if key == "const":
        return {"enum": [value]}
    if key == "exclusiveMinimum":  # JSON schema number -> OpenAPI v3.0 boolean form
        return {"minimum": value, "exclusiveMinimum": True}
    if key == "exclusiveMaximum":
        return {"maximum": value, "exclusiveMaximum": True}
    return {key: _rewrite(value, defs)}


def _free_form(out: dict[str, Any]) -> None:
    """Objects without a schema (volumes, tolerations, args) keep unknown fields."""
    if out.get("type") == "object" and "properties" not in out:
        extra = out.get("additionalProperties", True)
        if extra is True or extra == {}:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and out.get("items") in ({}, None):
        out["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if "type" not in out and "properties" not in out and "items" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True  # Any -> any JSON value


def _object_schema(spec: type[BaseModel], status: type[BaseModel], description: str,
                   spec_required: bool) -> dict[str, Any]:
    spec_schema = structural(spec)
    spec_schema["description"] = spec_schema.get("description") or "Desired state."
    status_schema = structural(status)
    status_schema["description"] = "Observed state, written by the operator."
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if spec_required:
        schema["required"] = ["spec"]
    return schema


def _column(name: str, path: str, type_: str = "string", description: str = "",
            priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


JOB_COLUMNS = [
    _column("TASK", ".spec.plan.task", description="Ultralytics task"),
    _column("CLASS", ".spec.plan.gpuClass", description="GPU class of the plan"),
    _column("SLICE", ".spec.plan.slice", description="What each pod gets: a MIG slice, a "
            "DRA claim, a HAMi or KAI share"),
    _column("GPUS", ".spec.plan.gpus", "integer", "Total GPUs"),
    _column("BATCH/GPU", ".spec.plan.batchPerGpu", "integer", "Batch per GPU"),
    _column("ACCUM", ".spec.plan.accumulate", "integer", "Gradient accumulation"),
    _column("AMP", ".spec.plan.amp", description="Mixed precision"),
    _column("EST", ".spec.plan.estimate", description="Predicted peak per GPU"),
    _column("PEAK", ".status.measured.maxPeak", description="Measured peak per GPU"),
    _column("OBJ/IMG", ".status.plan.objectsPerImage", "integer", "Objects per image the "
            "plan assumes (measured by the pods when they found denser data)", priority=1),
    _column("PHASE", ".status.phase", description="Phase"),
    _column("AGE", ".metadata.creationTimestamp", "date"),
]

POLICY_COLUMNS = [
    _column("CLASSES", ".status.fleet[*].name", description="Discovered classes"),
    _column("AGE", ".metadata.creationTimestamp", "date"),
]


def _crd(kind: str, plural: str, singular: str, scope: str, short: list[str],
         schema: dict[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "yolofit"}},
        "spec": {
            "group": api.GROUP,
            "scope": scope,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": singular, "shortNames": short, "categories": ["yolofit"]},
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object."""
    job = _crd("YOLOTrainingJob", "yolotrainingjobs", "yolotrainingjob", "Namespaced", ["ytj"],
               _object_schema(api.YOLOTrainingJobSpec, api.YOLOTrainingJobStatus,
                              "An Ultralytics YOLO training job, fitted to GPU memory at "
                              "admission.", True),
               JOB_COLUMNS)
    policy = _crd("GPUCapacityPolicy", "gpucapacitypolicies", "gpucapacitypolicy", "Cluster",
                  ["gcp"],
                  _object_schema(api.GPUCapacityPolicySpec, api.GPUCapacityPolicyStatus,
                                 "GPU classes, namespace rules and planner levers for yolofit "
                                 "admission.", False),
                  POLICY_COLUMNS)
    return {"yolotrainingjobs.yaml": job, "gpucapacitypolicies.yaml": policy}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `yolofit crds --write` from yolofit/operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)
