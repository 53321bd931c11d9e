"""Admission refuses what would make every pod creation fail, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from yolofit.operator.api import YOLOTrainingJobSpec
from yolofit.operator.pod_spec_checks import errors, quantity_error


def spec(**kw: Any) -> YOLOTrainingJobSpec:
    return YOLOTrainingJobSpec.model_validate({"model": "yolov8n", "data": "/d.yaml", **kw})


@pytest.mark.parametrize(("value", "ok"), [
    ("4", True), ("500m", True), ("0.5", True), ("1.5", True), ("2e3", True), ("16Gi", True),
    ("1k", True), ("+2", True), (".5", True),
    ("four", False), ("4 cores", False), ("-1", False), ("0", False), ("0m", False),
    ("4GB", False), ("1.2.3", False), ("", False), ("4gi", False),
])
def test_quantities(value: str, ok: bool) -> None:
    assert (quantity_error("spec.resources.cpu", value) is None) == ok


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"resources": {"cpu": "four"}}, "spec.resources.cpu: 'four' is not a Kubernetes quantity"),
    ({"resources": {"memory": "16GB"}}, "spec.resources.memory: '16GB'"),
    ({"resources": {"shm": "0"}}, "spec.resources.shm: '0' must be more than zero"),
    ({"volumes": [{"name": "dshm", "emptyDir": {}}]},
     "spec.volumes[0].name: 'dshm' is reserved"),
    ({"volumes": [{"name": "Data", "emptyDir": {}}]}, "spec.volumes[0].name: 'Data' must be"),
    ({"volumes": [{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]},
     "spec.volumes[1].name: 'd' is used by more than one volume"),
    ({"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     "spec.volumeMounts[0].name: 'data' is not a volume of the job (spec.volumes has none)"),
    ({"volumes": [{"name": "d", "emptyDir": {}}],
      "volumeMounts": [{"name": "d", "mountPath": "data"}]},
     "spec.volumeMounts[0].mountPath: 'data' must be an absolute path"),
    ({"volumes": [{"name": "d", "emptyDir": {}}],
      "volumeMounts": [{"name": "d", "mountPath": "/dev/shm/"}]},
     "spec.volumeMounts[0].mountPath: /dev/shm/ is where yolofit mounts its own volume"),
])
def test_refusals_name_the_field(kw: dict[str, Any], fragment: str) -> None:
    got = errors(spec(**kw))
    assert any(fragment in e for e in got), got


def test_a_good_spec_has_no_errors() -> None:
    assert errors(spec(resources={"cpu": "500m", "memory": "8Gi", "shm": "1Gi"},
                       volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}],
                       volumeMounts=[{"name": "data", "mountPath": "/data"}])) == []
