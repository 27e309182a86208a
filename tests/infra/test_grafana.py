"""The Grafana provisioning and dashboards in infra/grafana, checked statically: they parse,
their panels are laid out and bound to the provisioned datasource, and every query selects
only metrics the services export (read from the services' own metric declarations).

tests/e2e/test_observability.py runs every one of these queries against a real Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboards import GRAFANA, ROOT, expand, load, panels, queries, used_variables
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from test_prometheus import metric_names  # the PromQL metric-name reader the alert checks use

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
DASHBOARD_PATH = "/var/lib/grafana/dashboards"
PANEL_TYPES = {"timeseries", "stat", "table"}

# The specification's "Grafana Dashboard Queries" (section 5, Monitoring Setup), verbatim.
SPEC_QUERIES = {
    "Worker Health Status": "sum(rate(worker_health_checks_total[5m])) by (status)",
    "Job Processing Rate": "rate(jobs_processed_total[5m])",
    "Queue Length": 'queue_length{queue_name=~".*"}',
    "Worker CPU Usage": "worker_cpu_usage_percent",
    "Database Connection Pool": "db_connection_pool_active / db_connection_pool_max * 100",
}

# What each dashboard is for: the metrics it must chart.
REQUIRED = {
    "overview.json": {"qstack_leader", "qstack_workers"},
    "workers.json": {"worker_cpu_usage_percent", "qstack_worker_memory_bytes",
                     "qstack_worker_loop_lag_seconds", "qstack_worker_in_flight",
                     "worker_health_checks_total", "worker_health_checks_failed_total"},
    "queues.json": {"queue_length", "qstack_queue_jobs", "qstack_oldest_pending_age_seconds",
                    "qstack_enqueue_to_start_seconds_bucket", "qstack_job_duration_seconds_bucket",
                    "jobs_processed_total", "qstack_job_retries_total", "qstack_jobs_dead_total"},
    "locks-failover.json": {"qstack_lock_acquire_seconds_bucket", "qstack_lock_contention_total",
                            "qstack_failovers_total", "qstack_jobs_rescued_total",
                            "qstack_jobs_quarantined_total", "qstack_jobs_timed_out_total",
                            "qstack_rescue_seconds_bucket", "qstack_leader"},
    "database.json": {"db_connection_pool_active", "db_connection_pool_max"},
}

# Exported but on no dashboard, with the reason.
NOT_CHARTED: set[str] = set()  # every exported metric is on a dashboard


def _families() -> Iterator[tuple[str, str]]:
    """(name, type) of every metric family the services declare."""
    import qfailover.metrics
    import qregistry.metrics
    import qscheduler.metrics
    import qshared.metrics
    import qworker.metrics
    from qscheduler.system_metrics import SystemMetrics

    for module in (qshared.metrics, qregistry.metrics, qscheduler.metrics, qworker.metrics,
                   qfailover.metrics):
        for obj in vars(module).values():
            if isinstance(obj, MetricWrapperBase):
                for family in obj.describe():
                    yield family.name, family.type
    # /admin/metrics: gauges on a registry of their own, built per app (no storage needed here)
    system: CollectorRegistry = SystemMetrics(None, 1.0).registry  # type: ignore[arg-type]
    for family in system.collect():
        yield family.name, family.type


def exported_series() -> set[str]:
    """The series names the services export, plus Prometheus' own `up`."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    names = {"up"}
    for name, kind in _families():
        names |= {name + suffix for suffix in suffixes[kind]}
    return names


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return load()


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ----------------------------------------------------------------------------- provisioning

def test_datasource_is_prometheus_with_a_fixed_uid():
    config = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert config["apiVersion"] == 1
    [ds] = config["datasources"]
    assert (ds["type"], ds["uid"], ds["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    assert ds["isDefault"] is True and ds["access"] == "proxy"


def test_dashboard_provider_reads_the_mounted_folder():
    config = _yaml(GRAFANA / "provisioning" / "dashboards" / "qstack.yml")
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "qstack")
    assert provider["options"]["path"] == DASHBOARD_PATH
    readme = (GRAFANA / "README.md").read_text()
    assert f"./infra/grafana/dashboards:{DASHBOARD_PATH}" in readme
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning" in readme


def test_compose_mounts_them_if_it_runs_grafana():
    services = _yaml(ROOT / "compose.yaml")["services"]
    grafana = services.get("grafana")
    if grafana is None:
        pytest.skip("compose.yaml has no grafana service yet")
    volumes = [str(v) for v in grafana.get("volumes", [])]
    assert any(v.startswith(f"./infra/grafana/dashboards:{DASHBOARD_PATH}") for v in volumes), volumes
    assert any(v.startswith("./infra/grafana/provisioning:/etc/grafana/provisioning")
               for v in volumes), volumes


# -------------------------------------------------------------------------------- dashboards

def test_the_dashboards_and_their_uids(boards):
    assert set(boards) == set(REQUIRED)
    uids = [b.get("uid") for b in boards.values()]
    assert all(uids) and len(set(uids)) == len(uids), uids
    assert all(len(uid) <= 40 for uid in uids), uids
    titles = [b["title"] for b in boards.values()]
    assert len(set(titles)) == len(titles), titles
    for name, board in boards.items():
        assert board["schemaVersion"] >= 36, name
        assert board.get("id") is None, f"{name}: provisioned dashboards carry no database id"


def test_panels_are_laid_out_and_bound_to_the_datasource(boards):
    for name, board in boards.items():
        ids = [p["id"] for p in panels(board)]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in panels(board):
            where = f"{name}: panel {panel.get('title')!r}"
            pos = panel["gridPos"]
            assert {"h", "w", "x", "y"} <= set(pos) and pos["x"] + pos["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel["type"] in PANEL_TYPES, where
            assert panel["datasource"] == DATASOURCE, where
            targets = panel.get("targets", [])
            assert targets and all(t.get("expr") for t in targets), where
            assert all(t["datasource"] == DATASOURCE for t in targets), where
            refs = [t["refId"] for t in targets]
            assert len(set(refs)) == len(refs), where


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_panels_do_not_overlap(boards):
    for name, board in boards.items():
        # the top-level layout, and each collapsed row's own (shown when it is expanded)
        layouts = [board["panels"]] + [p["panels"] for p in board["panels"] if p.get("panels")]
        for layout in layouts:
            for a, b in combinations(layout, 2):
                assert not _overlap(a["gridPos"], b["gridPos"]), (name, a["title"], b["title"])


def test_queries_use_only_exported_metrics(boards):
    exported = exported_series()
    for name, board in boards.items():
        for panel, target in queries(board):
            selected = metric_names(expand(target["expr"], board))
            assert selected, f"{name} {panel['title']!r} selects no metric: {target['expr']}"
            unknown = selected - exported
            assert not unknown, f"{name} {panel['title']!r}: {sorted(unknown)} are not exported"


def test_variables_are_defined(boards):
    for name, board in boards.items():
        defined = {v["name"] for v in board["templating"]["list"]}
        for panel, target in queries(board):
            missing = used_variables(target["expr"]) - defined - {"__rate_interval"}
            assert not missing, f"{name} {panel['title']!r} uses undefined {sorted(missing)}"
            expanded = expand(target["expr"], board)
            assert "$" not in expanded and expanded.count("(") == expanded.count(")"), expanded


def test_overview_has_the_specification_queries_verbatim(boards):
    found = {panel["title"]: [t["expr"] for t in panel["targets"]]
             for panel in panels(boards["overview.json"]) if panel["type"] != "row"}
    for title, expr in SPEC_QUERIES.items():
        assert found.get(title) == [expr], (title, found.get(title))


def test_each_dashboard_charts_what_it_is_for(boards):
    for name, required in REQUIRED.items():
        used = {m for _, t in queries(boards[name]) for m in metric_names(expand(t["expr"], boards[name]))}
        assert required <= used, f"{name} lacks {sorted(required - used)}"


def test_every_exported_metric_is_charted(boards):
    used = {m for board in boards.values() for _, t in queries(board)
            for m in metric_names(expand(t["expr"], board))}
    families = {name for name in exported_series() if not name.endswith(("_sum", "_count"))}
    # a histogram counts as charted through its buckets
    missing = families - used - NOT_CHARTED
    assert not missing, f"exported but on no dashboard: {sorted(missing)}"
