"""The Grafana dashboards of infra/grafana for the tests: load them, walk their panels (rows'
nested ones included), and expand their variables the way Grafana does before a query is sent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"

# What Grafana puts in for its built-in interval variables. $__rate_interval is at least four
# scrape intervals; the end-to-end test scrapes every second, so one minute holds plenty.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard model, for every JSON file in infra/grafana/dashboards."""
    return {path.name: json.loads(path.read_text())
            for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row keeps inside itself."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every target with a PromQL expression."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def used_variables(expr: str) -> set[str]:
    """The names of the variables ($name or ${name}) an expression uses."""
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)}


def expand(expr: str, dashboard: dict[str, Any]) -> str:
    """The expression as Grafana sends it with every variable at "All" (its allValue, or a
    match-anything regex for a multi-value variable) and the built-in intervals filled in.

    Raises:
        KeyError: for a variable the dashboard does not define.
    """
    defined = variables(dashboard)

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        var = defined[name]
        if var.get("allValue"):
            return var["allValue"]
        return ".*" if var.get("multi") or var.get("includeAll") else var["current"]["value"]

    return _VARIABLE.sub(value, expr)
