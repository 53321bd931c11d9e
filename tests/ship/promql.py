"""The PromQL the chart ships (alert rules + dashboard) and the metric names it uses.

`metric_names()` is a small lexer, not a parser: it drops string literals, label matchers,
range/subquery brackets and grouping clauses, then every remaining identifier that is not a
function call, keyword or aggregation is a metric name. Prometheus itself checks the syntax
(promtool and the query API); this only needs to find names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "yolofit"
RULES = CHART / "rules" / "yolofit-rules.yaml"
DASHBOARD = CHART / "dashboards" / "yolofit.json"

# Prometheus' own series, not exported by the project.
PROMETHEUS_BUILTINS = {"up"}

# Grafana's variables, replaced by what Grafana would send with every variable on "All".
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "15s",
    "$namespace": ".*",
    "$gpu_class": ".*",
}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2", "start", "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\()?")


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name, call in _IDENT.findall(text)
            if not call and name.lower() not in _KEYWORDS}


def rule_expressions() -> Iterator[tuple[str, str]]:
    """(alert or record name, expression) of every rule in the rules file."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(panel title / variable name, PromQL) of every panel target and query variable.

    A variable's `label_values(metric, label)` becomes the series selector `metric`.
    """
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            yield f"variable {var['name']}", m.group(1) if m else query


def grafana_to_promql(expr: str) -> str:
    for var, value in sorted(GRAFANA_SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr
