"""The Grafana dashboard asks only for metrics the running services really serve."""

from __future__ import annotations

import json
import re
import secrets
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


def request_count(text: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels == labels
    )


def test_requests_are_counted_under_their_route_template_never_their_path(cluster: Cluster) -> None:
    order_id = secrets.token_hex(8)
    gateway, orders = cluster.service_url("gateway"), cluster.service_url("orders")
    before = {url: httpx.get(url + "/metrics", timeout=10).text for url in (gateway, orders)}

    assert httpx.get(f"{gateway}/api/orders/{order_id}", timeout=10).status_code == 401
    assert httpx.get(f"{orders}/orders/{order_id}", timeout=10).status_code == 401
    assert httpx.get(f"{orders}/{order_id}", timeout=10).status_code == 404
    assert httpx.get(f"{gateway}/{order_id}", timeout=10).status_code == 404

    after = {url: httpx.get(url + "/metrics", timeout=10).text for url in (gateway, orders)}
    expected = [
        (gateway, {"method": "GET", "route": "/api/orders", "status": "401"}),
        (orders, {"method": "GET", "route": "/orders/{order_id}", "status": "401"}),
        (orders, {"method": "GET", "route": "unmatched", "status": "404"}),
        # The gateway's catch-all matches every path; one the route table lacks stays under its template.
        (gateway, {"method": "GET", "route": "unmatched", "status": "404"}),
    ]
    for url, labels in expected:
        assert request_count(after[url], **labels) == request_count(before[url], **labels) + 1, labels
    assert all(order_id not in text for text in after.values())
