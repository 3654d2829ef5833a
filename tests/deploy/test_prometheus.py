"""deploy/prometheus: rules parse as PromQL and use only the metrics of the documented contract."""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.dockerfile import REPO

PROM = REPO / "deploy" / "prometheus"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "fleet-rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _contract() -> set[str]:
    text = (PROM / "README.md").read_text()
    table = text.split("<!-- metric-contract:start -->")[1].split("<!-- metric-contract:end -->")[0]
    return set(re.findall(r"^\| `(\w+)`", table, flags=re.MULTILINE))


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(promql_parser.parse(expr))
    return names


def _known(name: str, contract: set[str]) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in contract or base in contract


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_rule_parses_and_uses_contract_metrics(rule: dict[str, Any]) -> None:
    """The alert's expression is valid PromQL and every metric in it is in the README's contract."""
    names = _metric_names(rule["expr"])
    assert names, rule["expr"]
    contract = _contract()
    assert all(_known(n, contract) for n in names), names - contract
    assert rule["labels"]["severity"] and rule["annotations"]["summary"]


def test_parser_sees_every_metric_of_an_expression() -> None:
    """The metric walk finds names inside functions, aggregations and both sides of an operator."""
    expr = "sum(rate(a_total[5m])) / clamp_min(sum(rate(b_total[5m])), 1) > 0 and deriv(c[30m]) > 0"
    assert _metric_names(expr) == {"a_total", "b_total", "c"}


def test_required_alerts_exist() -> None:
    """There are alerts for a stale customer, pusher lag and the 5xx rate."""
    alerts = {r["alert"] for r in _rules()}
    assert {"FleetCustomerStale", "FleetPusherLag", "FleetIngestd5xxRate"} <= alerts


def test_scrape_config_loads_the_rules_and_scrapes_both_services() -> None:
    """prometheus.yml points at the rules file beside it and has ingestd and pusher jobs."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (PROM / rule_file).is_file()
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"fleet-ingestd", "fleet-pusher"} <= jobs
