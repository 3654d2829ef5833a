"""deploy/prometheus: rules parse as PromQL and use only the metrics of the documented contract."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
    """There are alerts for the 5xx rate and, without scraping any gateway, for gateways silent,
    behind, blocked, skewed, quarantining, low on disk, on an old version."""
    alerts = {r["alert"] for r in _rules()}
    assert {
        "FleetIngestd5xxRate",
        "FleetGatewaySilent",
        "FleetGatewayBehind",
        "FleetGatewayCursorBlocked",
        "FleetGatewayClockSkew",
        "FleetGatewayQuarantineGrowing",
        "FleetGatewayDiskLow",
        "FleetGatewayOldVersion",
    } <= alerts
    assert not any("fleet_pusher_" in r["expr"] for r in _rules())


def test_scrape_config_loads_the_rules_and_scrapes_no_gateway() -> None:
    """prometheus.yml points at the rules file beside it, scrapes ingestd and no gateway."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (PROM / rule_file).is_file()
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert "fleet-ingestd" in jobs and "fleet-pusher" not in jobs


def _promtool() -> str:
    """promtool, installed from Debian's `prometheus` package when missing (as root with apt)."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "promtool missing and not installable here (apt-get install prometheus as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    found = shutil.which("promtool")
    if not found:
        pytest.skip(f"promtool could not be installed: {done.stderr.strip()[-300:]}")
    return found


def test_gateway_alerts_fire_in_promtool_unit_tests() -> None:
    """`promtool test rules` passes fleet-rules.test.yml: each gateway alert fires on its
    condition (once, with two replicas serving the same counts) and not before its `for`."""
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "test", "rules", "fleet-rules.test.yml"],
        cwd=PROM, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
