"""The API models are the one schema source: the committed CRDs are their output, and the
output is structural (no $ref/anyOf, every node typed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from yolofit.operator import api, crds

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_equal_the_generated_ones() -> None:
    for name, crd in crds.crds().items():
        committed = (REPO / "deploy" / "crds" / name).read_text()
        assert committed == crds.render(crd), f"deploy/crds/{name} is stale: yolofit crds --write"


def _walk(node: Any, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for bad in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "title"):
            if bad in node:
                problems.append(f"{path}: {bad}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties with additionalProperties")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: untyped")
        for key, sub in node.get("properties", {}).items():
            problems += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            problems += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("name", ["yolotrainingjobs.yaml", "gpucapacitypolicies.yaml"])
def test_crd_schema_is_structural(name: str) -> None:
    crd = yaml.safe_load(crds.render(crds.crds()[name]))
    version = crd["spec"]["versions"][0]
    assert _walk(version["schema"]["openAPIV3Schema"]) == []
    assert version["subresources"] == {"status": {}}


def test_job_crd_has_printer_columns_short_name_and_descriptions() -> None:
    crd = crds.crds()["yolotrainingjobs.yaml"]
    version = crd["spec"]["versions"][0]
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["TASK", "CLASS", "SLICE", "GPUS", "BATCH/GPU", "ACCUM", "AMP", "EST",
                    "PEAK", "OBJ/IMG", "PHASE", "AGE"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["OBJ/IMG"]  # kubectl get ytj -o wide
    assert spec_task_enum(crd) == ["detect", "segment", "pose", "obb", "classify"]
    assert crd["spec"]["names"]["shortNames"] == ["ytj"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["model", "data"]
    assert "Ultralytics model" in spec["properties"]["model"]["description"]
    assert spec["properties"]["amp"]["enum"] == ["auto", "fp16", "bf16", "off"]
    assert spec["properties"]["args"]["x-kubernetes-preserve-unknown-fields"] is True
    plan = spec["properties"]["plan"]["properties"]
    assert plan["breakdown"]["additionalProperties"] == {"type": "integer"}


@pytest.mark.parametrize(("spec", "field"), [
    ({"data": "/d.yaml"}, "model"),
    ({"model": "yolov8n", "data": "/d.yaml", "imgsz": 100}, "imgsz"),
    ({"model": "yolov8n", "data": "/d.yaml", "amp": "fp8"}, "amp"),
    ({"model": "yolov8n", "data": "/d.yaml", "gpus": {"nodes": 0}}, "gpus"),
    ({"model": "yolov8n", "data": "/d.yaml", "bogus": 1}, "bogus"),
])
def test_spec_validation_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        api.YOLOTrainingJobSpec.model_validate(spec)
    assert field in str(err.value)


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = api.YOLOTrainingJobSpec(model="yolov8n", data="/d.yaml", gpu_class="t4",
                                   max_objects_per_image=20)
    wire = spec.wire()
    assert wire["gpuClass"] == "t4" and wire["maxObjectsPerImage"] == 20
    assert api.YOLOTrainingJobSpec.model_validate(wire) == spec


def spec_task_enum(crd: dict) -> list[str]:  # type: ignore[type-arg]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return list(spec["properties"]["task"]["enum"])
