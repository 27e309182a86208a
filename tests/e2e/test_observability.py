"""Observability end to end: a real Prometheus with the shipped infra/prometheus (its jobs,
metrics paths, auth and alert rules; qctl.prometheus puts the stack's loopback addresses in
place of compose's DNS discovery) scrapes a real stack under a load with failing jobs, a backlog
and killed workers. Then every Grafana panel query (infra/grafana) and every alert expression
must return data, Prometheus must have loaded every rule, and every target but the killed
workers must be up.

It runs on PostgreSQL and on MariaDB with the same checks: no metric depends on the dialect
(the wake-ups, LISTEN/NOTIFY or the notifications table, have none), and both scrape the same
metric names with the same labels.

Needs the `prometheus` binary (Debian's `prometheus` package); without it this skips with the
reason, except under CI (`CI` set), where it fails.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dashboards import expand, load, queries, variables
from stack_fixtures import on_each_database
from tooling import free_port, require_tool

from qctl.prometheus import LocalPrometheus, PrometheusError, stack_targets
from qctl.stack import Stack
from qshared.client import job_body

pytestmark = pytest.mark.e2e

PROM_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
# Alerts the scenario provokes: their full expressions must return data.
PROVOKED = {"WorkerDown", "HighJobBacklog", "DeadJobsGrowing", "FailoverHappened"}
BACKLOG = "backlog"  # a queue no worker of the stack serves: its jobs stay pending
# One worker is killed; the failover watcher declares its event types' series at 0 when it
# starts, so increase() (FailoverHappened) sees the first failover.
KILLED = ("worker-2",)
CHECK_TIMEOUT = 60.0


# -------------------------------------------------------------------------------- Prometheus

@pytest.fixture
def run_prometheus(tmp_path: Path) -> Iterator[Callable[[Stack], LocalPrometheus]]:
    """run_prometheus(stack) -> a started Prometheus with the shipped scrape jobs and alert
    rules pointed at the stack (qctl.prometheus), on a free port; stopped after the test."""
    started: list[LocalPrometheus] = []

    def run(stack: Stack) -> LocalPrometheus:
        prom = LocalPrometheus(stack_targets(stack), stack.token, tmp_path / "prometheus",
                               free_port(), interval="1s")
        started.append(prom)
        prom.start()
        return prom

    try:
        yield run
    finally:
        for prom in started:
            prom.stop()


def wait_for_query(prom: LocalPrometheus, expr: str, timeout: float, what: str) -> None:
    """Poll until `expr` returns a sample."""
    deadline = time.monotonic() + timeout
    while not prom.query(expr):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} ({expr})")
        time.sleep(0.25)


# ------------------------------------------------------------------------------------ load

class Traffic:
    """Keeps jobs and lock requests coming until stopped, so that every counter and histogram
    moves between scrapes: a rate() needs two different samples in its window, and a labelled
    series only appears at its first increment."""

    def __init__(self, stack: Stack) -> None:
        self.url, self.token = stack.scheduler_url, stack.token
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.enqueued = 0
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            tick = 0
            while not self.stop.wait(0.25):
                try:
                    self._round(http, tick)
                except Exception as exc:  # reported by the test, not lost in the thread
                    self.errors.append(repr(exc))
                tick += 1

    def _round(self, http: httpx.Client, tick: int) -> None:
        queue = ("default", "emails")[tick % 2]
        jobs = [job_body("noop", queue="default") for _ in range(10)]
        jobs += [job_body("echo", {"tick": tick}, queue="emails") for _ in range(10)]
        jobs += [job_body("fail", {"message": "on purpose"}, queue=queue, max_attempts=2),
                 job_body("flaky", 0.5, queue=queue, max_attempts=3)]
        if tick % 8 == 0:
            jobs.append(job_body("sleep", 0.3, queue=queue))
        http.post("/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
        self.enqueued += len(jobs)
        # one acquisition, one contended attempt, one release
        key = "/api/v1/locks/observability"
        got = http.post(key, json={"owner": "alice", "ttl_ms": 5000})
        got.raise_for_status()
        assert http.post(key, json={"owner": "bob", "ttl_ms": 5000}).status_code == 409
        token = got.json()["token"]
        http.post(f"{key}/release", json={"owner": "alice", "token": token}).raise_for_status()


# ---------------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class Check:
    """One query and what it must give: "data" (a finite sample) or "valid" (no error)."""

    kind: str
    name: str
    expr: str
    need: str = "data"


def watched(expr: str) -> str:
    """What an alert watches: its expression without the final threshold comparison, and of
    `A or absent(B)` only A."""
    expr, depth = " ".join(expr.split()), 0
    for i, ch in enumerate(expr):
        depth += (ch in "([{") - (ch in ")]}")
        if depth == 0 and expr.startswith(" or ", i):
            expr = expr[:i]
            break
    m = re.fullmatch(r"(.+?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?[0-9.eE]+", expr)
    return m.group(1) if m else expr


def test_watched():
    assert watched('up{job="queue-workers"} == 0') == 'up{job="queue-workers"}'
    assert watched("a / b > 0.9") == "a / b"
    assert watched('max(x{r="d"}) < 1\n or absent(x{r="d"})') == 'max(x{r="d"})'
    assert watched("histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 5") == (
        "histogram_quantile(0.99, sum by (le) (rate(h[5m])))")


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def checks_to_run() -> list[Check]:
    checks = []
    for file, board in load().items():
        for panel, target in queries(board):
            checks.append(Check("panel", f"{file} / {panel['title']} / {target['refId']}",
                                expand(target["expr"], board)))
        for var in variables(board).values():
            query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, f"{file}: variable {var['name']}: only label_values(metric, label) is checked"
            checks.append(Check("variable", f"{file} / ${var['name']}",
                                f"group by ({m.group(2)}) ({m.group(1)})"))
    for rule in _alerts():
        name, expr = rule["alert"], rule["expr"]
        checks.append(Check("alert", f"{name} (watched)", watched(expr)))
        checks.append(Check("alert", name, expr, "data" if name in PROVOKED else "valid"))
    return checks


def _has_finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def wait_for_checks(prom: LocalPrometheus, checks: list[Check], timeout: float) -> int:
    """Evaluate every check until each has passed once; returns the rounds it took."""
    pending, last, rounds = list(checks), {}, 0
    deadline = time.monotonic() + timeout
    while pending:
        rounds += 1
        for check in list(pending):
            try:
                result = prom.query(check.expr)
            except PrometheusError as exc:
                pytest.fail(f"{check.kind} {check.name} is not a valid query: {exc}")
            if check.need == "valid" or _has_finite(result):
                pending.remove(check)
            last[check] = result
        if pending and time.monotonic() > deadline:
            lines = [f"  {c.kind} {c.name}: {c.expr}\n    last result: {last[c]}" for c in pending]
            pytest.fail(f"{len(pending)} of {len(checks)} queries returned no data within "
                        f"{timeout:.0f}s:\n" + "\n".join(lines))
        if pending:
            time.sleep(0.5)
    return rounds


def wait_until(check: Callable[[], tuple[bool, Any]], timeout: float, what: str) -> None:
    """Poll `check` (-> (done, what it saw)) until done; fail with what it last saw."""
    deadline = time.monotonic() + timeout
    while not (seen := check())[0]:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {seen[1]}")
        time.sleep(0.25)


# ------------------------------------------------------------------------------------ test

@on_each_database
def test_every_panel_query_and_alert_has_data(start_stack, run_prometheus):
    require_tool("prometheus")  # skip (or fail under CI) before starting anything
    t0 = time.monotonic()
    checks = checks_to_run()
    stack = start_stack(workers=3, concurrency=4, env={"WORKER_HEALTH_CHECK_INTERVAL": "1"})
    prom = run_prometheus(stack)
    t_ready = time.monotonic()

    with Traffic(stack) as traffic, stack.client() as client:
        for i in range(4):
            client.enqueue_many([job_body("noop" if i % 2 else "echo", {"i": i},
                                          queue=("default", "emails")[i % 2]) for _ in range(500)])
        client.enqueue_many([job_body("noop", queue=BACKLOG) for _ in range(1100)])
        wait_for_query(prom, 'sum(jobs_processed_total{status="succeeded"}) > 300', 30,
                       "the load to be under way")
        failovers = 0
        for name in KILLED:
            stack.kill(name, signal.SIGKILL)
            failovers += 1
            wait_for_query(prom, f"sum(qstack_failovers_total) >= {failovers}", 30,
                           f"the failover of {name}")
        t_killed = time.monotonic()

        rounds = wait_for_checks(prom, checks, CHECK_TIMEOUT)
        t_checked = time.monotonic()

        # Prometheus loaded every rule of alerts.yml, evaluates them without error, and the
        # provoked ones are pending or firing.
        names = {rule["alert"] for rule in _alerts()}

        def rules_ok() -> tuple[bool, Any]:
            loaded = {r["name"]: (r["health"], r.get("lastError"))
                      for g in prom.api("rules", type="alert")["groups"] for r in g["rules"]}
            return set(loaded) == names and all(h == "ok" for h, _ in loaded.values()), loaded

        def provoked_active() -> tuple[bool, Any]:
            active = {a["labels"]["alertname"]: a["state"] for a in prom.api("alerts")["alerts"]}
            return PROVOKED <= set(active), active

        wait_until(rules_ok, 30, "every rule to be loaded and evaluated with health ok")
        wait_until(provoked_active, 30, f"{sorted(PROVOKED)} to be pending or firing")

        # every target answers except the killed workers
        killed = {f"{stack.services[n].host}:{stack.services[n].port}" for n in KILLED}
        expected = {(job, inst): "down" if inst in killed else "up"
                    for job, found in stack_targets(stack).items() for inst in found}
        shipped = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"]
        assert {job for job, _ in expected} == {job["job_name"] for job in shipped}

        def targets_as_expected() -> tuple[bool, Any]:
            active = prom.api("targets", state="active")["activeTargets"]
            health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
            return health == expected, health

        wait_until(targets_as_expected, 30, "every target but the killed workers to be up")
        assert not traffic.errors, traffic.errors[:5]

    kinds = {k: sum(c.kind == k for c in checks) for k in ("panel", "variable", "alert")}
    dashboards = len({c.name.split(" / ")[0] for c in checks if c.kind == "panel"})
    print(f"\nobservability: {kinds['panel']} panel queries in {dashboards} dashboards, "
          f"{kinds['variable']} template variable(s) and {kinds['alert']} alert expressions "
          f"({len(_alerts())} rules) returned data or evaluated ({rounds} polling rounds); "
          f"{traffic.enqueued} jobs trickled in besides 3100 in bulk; {len(KILLED)} workers "
          f"killed. Stack + Prometheus up in {t_ready - t0:.1f}s, kills and failovers done at "
          f"{t_killed - t0:.1f}s, queries all answered at {t_checked - t0:.1f}s, "
          f"total {time.monotonic() - t0:.1f}s.")
