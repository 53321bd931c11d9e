from __future__ import annotations

import pytest

from yolofit.operator import ultralytics_args


def test_cached_argument_names_match_the_installed_ultralytics() -> None:
    pytest.importorskip("ultralytics")
    generated = ultralytics_args.generate()
    assert set(generated["args"]) == set(ultralytics_args.known_args()), \
        "data/ultralytics_args.json is stale: regenerate with ultralytics_args.write()"


@pytest.mark.parametrize(("args", "expected"), [
    ({"lr0": 0.01, "mosaic": 0.5, "cos_lr": True}, []),
    ({"mosiac": 1.0}, ["spec.args.mosiac: 'mosiac' is not an Ultralytics train argument "
                       "(did you mean 'mosaic'?)"]),
    ({"batch": 16}, ["spec.args.batch: set by spec.plan (batch per GPU x GPUs), not by extra "
                     "arguments"]),
    ({"zzzzzz": 1}, ["spec.args.zzzzzz: 'zzzzzz' is not an Ultralytics train argument"]),
    ({"cfg": "/data/args.yaml"}, ["spec.args.cfg: set by the entries of spec.args (yolofit "
                                  "reads no arguments file: copy its arguments here), not by "
                                  "extra arguments"]),
    ({"task": "segment"}, ["spec.args.task: set by spec.task, not by extra arguments"]),
])
def test_validate(args: dict[str, object], expected: list[str]) -> None:
    assert ultralytics_args.validate(args) == expected


def test_webhook_path_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import yolofit.operator.webhooks, yolofit.operator.admission; "
            "print('torch' in sys.modules, 'ultralytics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
