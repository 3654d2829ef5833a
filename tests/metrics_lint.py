"""The checks `promtool check metrics` runs on an exposition page, in Python.

promtool (client_golang's promlint) is a Go binary the test machines may not have; these are its
rules, written from its documentation, plus the two Fleet adds: no `_created` series (they double
the page and nothing here reads them) and units spelled as base units. Where promtool is on PATH,
`promtool_problems` runs it as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["lint_page", "promtool_problems"]

_CAMEL = re.compile(r"[a-z][A-Z]")
_BASE_UNITS = {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres",
               "seconds", "volts"}  # fmt: skip
_OTHER_UNITS = {"minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds",
                "kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius",
                "inches": "meters", "yards": "meters", "miles": "meters", "bits": "bytes",
                "calories": "joules", "pounds": "grams", "ounces": "grams"}  # fmt: skip
_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi",
             "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")  # fmt: skip
_ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
_TYPES = ("counter", "gauge", "summary", "histogram", "gauge_histogram")  # client_model's types


def _unit_problem(name: str) -> str | None:
    for part in name.split("_"):
        for prefix in ("", *_PREFIXES):
            if not part.startswith(prefix):
                continue
            unit = part[len(prefix) :]
            base = unit if unit in _BASE_UNITS else _OTHER_UNITS.get(unit)
            if base is not None:
                return None if part == base else f'use base unit "{base}" instead of "{part}"'
    return None


def lint_page(text: str) -> list[str]:
    """Every convention problem on the page, as `name: problem` lines (empty when clean)."""
    problems: list[str] = []
    # The parser drops a counter's `_total` from the family name: read the declared names too.
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for family in text_string_to_metric_families(text):
        name, kind = family.name, family.type
        exposed = f"{name}_total" if kind == "counter" else name
        found: list[str] = []
        if not family.documentation.strip():
            found.append("no help text")
        if kind == "counter" and f"{name}_total" not in declared:
            found.append('counter metrics should have "_total" suffix')
        if kind not in {"counter", "unknown"} and name.endswith("_total"):
            found.append('non-counter metrics should not have "_total" suffix')
        if kind != "histogram" and name.endswith("_bucket"):
            found.append('non-histogram metrics should not have "_bucket" suffix')
        if kind not in {"histogram", "summary", "unknown"} and name.endswith(("_count", "_sum")):
            found.append("non-histogram and non-summary metrics should not have _count/_sum")
        lowered = exposed.lower()
        for type_name in _TYPES:
            if f"_{type_name}_" in lowered or lowered.endswith(f"_{type_name}"):
                found.append(f"metric name should not include type '{type_name}'")
        if ":" in exposed:
            found.append("metric names should not contain ':'")
        if _CAMEL.search(exposed):
            found.append("metric names should be written in 'snake_case' not 'camelCase'")
        if any(f"_{a}_" in lowered or lowered.endswith(f"_{a}") for a in _ABBREVIATIONS):
            found.append("metric names should not contain abbreviated units")
        if (unit := _unit_problem(exposed)) is not None:
            found.append(unit)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                found.append(f"{sample.name}: a _created series (disable_created_metrics)")
                break
            for label in sample.labels:
                if _CAMEL.search(label):
                    found.append(f"label {label} should be snake_case")
                if label == "le" and kind != "histogram":
                    found.append('non-histogram metrics should not have "le" label')
                if label == "quantile" and kind != "summary":
                    found.append('non-summary metrics should not have "quantile" label')
        problems += [f"{exposed}: {p}" for p in dict.fromkeys(found)]
    return problems


def promtool_problems(text: str) -> list[str] | None:
    """`promtool check metrics` on the page where promtool is installed, else None."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
