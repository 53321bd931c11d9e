"""Every PromQL expression the chart ships is checked by a real Prometheus, and every metric
name it uses is one the operator or the trainer really exports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from yolofit.sandbox.localrun import free_port
from yolofit.sandbox.prometheus import (
    Prometheus,
    PrometheusError,
    prometheus_binary,
    running_prometheus,
)

from .promql import (
    PROMETHEUS_BUILTINS,
    RULES,
    dashboard_expressions,
    grafana_to_promql,
    metric_names,
    rule_expressions,
)

HERE = Path(__file__).resolve().parent
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count")}
ALL_EXPRESSIONS = [*rule_expressions(), *dashboard_expressions()]


def exported_series_names(registry: CollectorRegistry) -> set[str]:
    """Names of the series a registry exposes, including metrics with no labelled child yet."""
    return {family.name + suffix for family in registry.collect()
            for suffix in SUFFIXES.get(family.type, ("",))}


@cache
def project_series_names() -> frozenset[str]:
    from yolofit.operator.metrics import REGISTRY
    from yolofit.trainer.exporter import TrainerMetrics

    trainer = TrainerMetrics("ns", "job", 0, "t4").registry
    return frozenset(exported_series_names(REGISTRY) | exported_series_names(trainer))


def test_promtool_checks_the_rules_file() -> None:
    result = subprocess.run([prometheus_binary("promtool"), "check", "rules", str(RULES)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "SUCCESS: 7 rules found" in result.stdout, (
        result.stdout + result.stderr)


def test_promtool_unit_tests_fire_each_alert_on_its_situation() -> None:
    result = subprocess.run([prometheus_binary("promtool"), "test", "rules", "rules_test.yaml"],
                            capture_output=True, text=True, check=False, cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_the_issue_names_exists() -> None:
    alerts = {name for name, _ in rule_expressions()}
    assert alerts == {"YolofitOOMAfterAdmission", "YolofitEstimateErrorHigh",
                      "YolofitJobsQueuedTooLong", "YolofitOperatorDown", "YolofitWebhookFailing",
                      "YolofitTracesFailing", "YolofitTraceBacklog"}


@pytest.mark.parametrize("name,expr", ALL_EXPRESSIONS, ids=[n for n, _ in ALL_EXPRESSIONS])
def test_metric_names_are_ones_the_project_exports(name: str, expr: str) -> None:
    used = metric_names(expr)
    assert used, f"no metric in {expr!r}"
    unknown = used - project_series_names() - PROMETHEUS_BUILTINS
    assert not unknown, f"{name}: {sorted(unknown)} not exported by the operator or trainer"


def test_the_exporters_label_values_come_from_the_operators_code() -> None:
    """exporters.py reads the label values from the operator's `.labels(...)` calls; the
    scan must find them (an empty scan would leave the dashboards' queries without data)."""
    from . import exporters

    assert len(exporters.PHASES) >= 5 and "Succeeded" in exporters.PHASES
    assert len(exporters.ADMISSION_RESULTS) >= 3 and len(exporters.WEBHOOKS) >= 2
    assert len(exporters.WEBHOOK_RESULTS) >= 2
    assert set(exporters.TRACE_RESULTS) == {"ok", "failed", "dropped"}
    assert exporters.CLASSLESS_RESULTS < set(exporters.ADMISSION_RESULTS)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus that has scraped the real exporters (operator + 2 trainer ranks)."""
    tmp = tmp_path_factory.mktemp("prometheus")
    operator_port, rank0, rank1 = free_port(), free_port(), free_port()
    exporters = subprocess.Popen(
        [sys.executable, str(HERE / "exporters.py"), str(operator_port), str(rank0), str(rank1)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert exporters.stdout is not None
        line = exporters.stdout.readline()
        if line.strip() != "serving":
            exporters.kill()
            pytest.fail(f"exporters did not start: {line}{exporters.communicate()[1]}")
        jobs = {"yolofit-operator": [f"127.0.0.1:{operator_port}"],
                "yolofit-trainer": [f"127.0.0.1:{rank0}", f"127.0.0.1:{rank1}"]}
        with running_prometheus(jobs, tmp) as prom:
            prom.wait_for_targets(count=3, scrapes=6)
            yield prom
    finally:
        exporters.kill()
        exporters.wait()


def test_the_exporters_series_keep_their_own_labels(scraped: Prometheus) -> None:
    labels = [r["metric"] for r in scraped.query("yolofit_trainer_peak_reserved_bytes")]
    assert sorted(m["rank"] for m in labels) == ["0", "1"]
    assert {(m["job"], m["namespace"], m["gpu_class"]) for m in labels} == {
        ("yolov8s-coco", "team-a", "t4")}
    up = scraped.query('up{job="yolofit-operator"} == 1')
    assert len(up) == 1


@pytest.mark.parametrize("name,expr", ALL_EXPRESSIONS, ids=[n for n, _ in ALL_EXPRESSIONS])
def test_query_evaluates_on_real_exporters(scraped: Prometheus, name: str, expr: str) -> None:
    """No error, and data: the names, label names and label values match what is exported.

    Alert conditions are evaluated without their threshold (the part left of the final
    comparison), which must return series; whether they fire is rules_test.yaml's job.
    """
    promql = grafana_to_promql(expr)
    result = evaluate(scraped, name, promql)
    if name.startswith("Yolofit"):
        promql = condition_without_threshold(promql)
        result = evaluate(scraped, name, promql)
    assert result, f"{name}: no data from the real exporters\n{promql}"


def evaluate(prom: Prometheus, name: str, promql: str) -> list[dict[str, Any]]:
    """The query's result vector; an error answer (bad PromQL) fails the test with it."""
    try:
        return prom.query(promql)
    except PrometheusError as exc:
        pytest.fail(f"{name}: {exc}\n{promql}")


def condition_without_threshold(expr: str) -> str:
    """`A > 0.1` -> `A`; `absent(X == 1)` -> `X == 1`."""
    expr = expr.strip()
    if expr.startswith("absent(") and expr.endswith(")"):
        return expr[len("absent("):-1]
    for op in (" > ", " < ", " >= ", " <= "):
        head, sep, _ = expr.rpartition(op)
        if sep:
            return head
    return expr
