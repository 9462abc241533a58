"""The Grafana dashboard asks only for metrics the running services really serve."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.devcluster import Cluster

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "hybrid-auth.json"

# PromQL words that look like metric names: aggregation modifiers, set operators, offsets.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: not its functions, labels or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        followed_by = text[match.end() :].lstrip()[:1]
        if followed_by != "(" and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def served_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_the_expression_parser_finds_metric_names_only() -> None:
    expression = (
        'sum by (job, audience) (rate(tokens_verified_total{job="gateway"}[$__rate_interval]))'
        " / ignoring (reason) max(jwks_age_seconds) offset 5m"
    )

    assert metric_names(expression) == {"tokens_verified_total", "jwks_age_seconds"}


def test_every_metric_the_dashboard_queries_is_served(cluster: Cluster) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    wanted = set().union(*(metric_names(expression) for expression in expressions(dashboard)))
    served: set[str] = set()
    for service in ("gateway", "auth", "orders"):
        response = httpx.get(cluster.service_url(service) + "/metrics", timeout=10)
        assert response.status_code == 200
        served |= served_names(response.text)

    assert len(wanted) >= 20
    assert sorted(wanted - served) == []


def test_every_panel_reads_the_dashboards_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]

    assert panels
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)
    assert [item["name"] for item in dashboard["templating"]["list"]] == ["datasource"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
