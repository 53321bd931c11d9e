"""The Grafana dashboard's structure: the sections the issue asks for, a layout Grafana can
place, and every query on the dashboard's data-source variable."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from .promql import DASHBOARD


def board() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_sections_cover_what_the_dashboard_must_show() -> None:
    rows = [p["title"] for p in board()["panels"] if p["type"] == "row"]
    assert rows == ["Fit: VRAM estimate vs measured", "Memory utilisation per class",
                    "Right-sized GPUs: memory per backend", "Admission and queue",
                    "OOMs and re-plans", "Training: step time and images/s",
                    "Profiling: first estimates of models without a profile", "Operator health"]


def test_layout_fits_the_grid_and_ids_are_unique() -> None:
    panels = board()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    widths: dict[int, int] = defaultdict(int)
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        widths[g["y"]] += g["w"]
    assert all(w <= 24 for w in widths.values()), widths


def test_every_query_uses_the_datasource_variable_and_has_a_unit() -> None:
    d = board()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "gpu_class"):
        assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*"
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}" and p["description"]
        assert p["fieldConfig"]["defaults"]["unit"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}"
                                    for t in p["targets"])
