"""The Prometheus configuration in infra/prometheus: promtool validates the scrape config and
the alert rules and runs the rules' unit tests (alerts_test.yml); plain Python checks that the
alerts only use metrics the services export and that every alert is tested both ways.

promtool comes from Debian's `prometheus` package (`apt-get install -y prometheus`). Without it
these tests skip with the reason, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "infra" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
TOKEN_FILE = "/etc/prometheus/token"

# The metrics the services export (DESIGN.md "Metrics"), plus Prometheus' own `up`.
KNOWN_METRICS = {
    "up",
    # every service
    "db_connection_pool_active", "db_connection_pool_max", "qstack_leader",
    # registry
    "worker_health_checks_total", "worker_health_checks_failed_total", "qstack_workers",
    # scheduler
    "queue_length", "qstack_jobs_enqueued_total", "qstack_jobs_assigned_total",
    "qstack_dispatch_batch_seconds", "qstack_worker_selection_seconds",
    "qstack_dispatch_batch_size", "qstack_lock_acquire_seconds", "qstack_lock_contention_total",
    # worker
    "jobs_processed_total", "qstack_job_duration_seconds", "qstack_enqueue_to_start_seconds",
    "qstack_job_retries_total", "qstack_jobs_dead_total", "qstack_worker_in_flight",
    "worker_cpu_usage_percent", "qstack_worker_memory_bytes", "qstack_worker_loop_lag_seconds",
    # failover
    "qstack_failovers_total", "qstack_jobs_rescued_total", "qstack_jobs_quarantined_total",
    "qstack_jobs_timed_out_total", "qstack_failover_held_back_total", "qstack_rescue_seconds",
}
HISTOGRAMS = {
    "qstack_dispatch_batch_seconds", "qstack_worker_selection_seconds",
    "qstack_dispatch_batch_size", "qstack_lock_acquire_seconds", "qstack_job_duration_seconds",
    "qstack_enqueue_to_start_seconds", "qstack_rescue_seconds",
}

# The specification's four critical alerts ("Monitoring & Alerting"), which must stay verbatim.
SPEC_ALERTS = {
    "WorkerDown": ('up{job="queue-workers"} == 0', "2m", "critical"),
    "HighJobBacklog": ("queue_length > 1000", "5m", "warning"),
    "WorkerHealthFailing": ("rate(worker_health_checks_failed_total[5m]) > 0.1", "2m", "critical"),
    "DatabaseConnectionExhaustion": (
        "db_connection_pool_active / db_connection_pool_max > 0.9", "1m", "critical"),
}
OWN_ALERTS = {"SchedulerLeaderMissing", "FailoverLeaderMissing", "DeadJobsGrowing",
              "EnqueueToStartLatencyHigh", "FailoverHappened"}


# ------------------------------------------------------------------------------- promtool

def _promtool() -> str:
    return require_tool("promtool", "prometheus")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_promtool_supports_rule_unit_tests():
    out = _run("--help").stdout
    assert "test rules" in out or re.search(r"^\s*test\b", out, re.M), out


def test_check_config(tmp_path: Path):
    # check config stats the credentials_file; the real one is mounted at deploy time, so
    # check a copy of the folder whose token path points at a scratch file instead.
    text = CONFIG.read_text()
    assert TOKEN_FILE in text
    token = tmp_path / "token"
    token.write_text("test-token\n")
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    (copy / "prometheus.yml").write_text(text.replace(TOKEN_FILE, str(token)))
    out = _run("check", "config", str(copy / "prometheus.yml")).stdout
    assert "1 rule files found" in out, out
    assert "SUCCESS" in out


def test_check_rules():
    out = _run("check", "rules", str(ALERTS)).stdout
    assert f"{len(SPEC_ALERTS) + len(OWN_ALERTS)} rules found" in out, out


def test_rule_unit_tests():
    out = _run("test", "rules", str(ALERTS_TEST), cwd=PROM_DIR).stdout
    assert "SUCCESS" in out, out


# ------------------------------------------------------------------------- plain checks

def _alerts() -> dict[str, dict[str, str]]:
    """alert name -> {"expr", "for", "severity"} from alerts.yml (no YAML library in the env:
    a small reader for the file's own layout, single-line or folded `>-` expressions)."""
    alerts: dict[str, dict[str, str]] = {}
    lines = ALERTS.read_text().splitlines()
    current: dict[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"\s*- alert:\s*(\S+)", line):
            current = alerts.setdefault(m.group(1), {})
        elif current is not None and (m := re.match(r"(\s*)expr:\s*(.*)$", line)):
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in (">-", ">", "|", "|-"):
                parts = []
                while i + 1 < len(lines) and (not lines[i + 1].strip() or
                                              len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent):
                    i += 1
                    parts.append(lines[i].strip())
                value = " ".join(p for p in parts if p)
            current["expr"] = value
        elif current is not None and (m := re.match(r"\s*for:\s*(\S+)", line)):
            current["for"] = m.group(1)
        elif current is not None and (m := re.match(r"\s*severity:\s*(\S+)", line)):
            current["severity"] = m.group(1)
        i += 1
    return alerts


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords dropped)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                     # string literals
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)                               # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)                              # range durations
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if rest.startswith("("):                                        # a function
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue                                                    # 1e3, 5m in offset
        if m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def _base_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def test_metric_name_extraction():
    assert metric_names('sum by (queue_name, le) (rate(x_bucket{a="b(c)"}[5m])) > 5') == {"x_bucket"}
    assert metric_names("a / b > 0.9 or absent(c{role=\"x\"})") == {"a", "b", "c"}


def test_alerts_use_only_exported_metrics():
    alerts = _alerts()
    assert alerts and all("expr" in a for a in alerts.values()), alerts
    unknown = {name: sorted(_base_name(m) for m in metric_names(a["expr"])
                            if _base_name(m) not in KNOWN_METRICS)
               for name, a in alerts.items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown
    for name, a in alerts.items():
        assert metric_names(a["expr"]), f"{name} selects no metric: {a['expr']}"


def test_spec_alerts_verbatim_and_own_alerts_present():
    alerts = _alerts()
    assert set(alerts) == set(SPEC_ALERTS) | OWN_ALERTS
    for name, (expr, for_, severity) in SPEC_ALERTS.items():
        assert alerts[name] == {"expr": expr, "for": for_, "severity": severity}, name
    for name in OWN_ALERTS:
        assert alerts[name].get("severity") in {"critical", "warning"}, name


def test_every_alert_tested_firing_and_quiet():
    """alerts_test.yml has, for every alert, a case expecting it and one expecting nothing."""
    firing: set[str] = set()
    quiet: set[str] = set()
    lines = ALERTS_TEST.read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*alertname:\s*(\S+)", line):
            nxt = next(ln for ln in lines[i + 1:] if ln.strip())
            if re.match(r"\s*exp_alerts:\s*\[\]\s*$", nxt):
                quiet.add(m.group(1))
            elif re.match(r"\s*exp_alerts:\s*$", nxt):
                firing.add(m.group(1))
    everything = set(SPEC_ALERTS) | OWN_ALERTS
    assert everything - firing == set(), "alerts never tested firing"
    assert everything - quiet == set(), "alerts never tested quiet"


def test_scrape_jobs():
    text = CONFIG.read_text()
    jobs = dict(re.findall(r"-\s*job_name:\s*(\S+)\n((?:(?!\s*-\s*job_name:).*\n?)*)", text))
    assert set(jobs) == {"queue-workers", "queue-system", "registry", "scheduler", "failover"}
    assert re.search(r"^global:\n\s+scrape_interval:\s*15s", text, re.M)
    assert re.search(r"^rule_files:\n\s+-\s*alerts\.yml", text, re.M)
    w = jobs["queue-workers"]
    assert "dns_sd_configs" in w and "names: [worker]" in w and "type: A" in w
    assert "port: 9090" in w and "scrape_interval: 30s" in w and "metrics_path: /metrics" in w
    s = jobs["queue-system"]
    assert "metrics_path: /admin/metrics" in s and "scrape_interval: 60s" in s
    assert '"nginx:80"' in s and f"credentials_file: {TOKEN_FILE}" in s
    for job, port in (("registry", 8081), ("scheduler", 8082), ("failover", 8083)):
        assert f"names: [{job}]" in jobs[job] and f"port: {port}" in jobs[job], job
        assert "metrics_path: /metrics" in jobs[job], job
