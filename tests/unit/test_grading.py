"""Health grading of worker reports."""

from qregistry.grading import grade


def test_healthy():
    assert grade(loop_lag_ms=5, cpu_percent=20, jobs_done=100, jobs_failed=1) == ("healthy", [])


def test_loop_lag_degrades_then_fails():
    status, reasons = grade(loop_lag_ms=300, cpu_percent=10, jobs_done=0, jobs_failed=0)
    assert status == "degraded" and "lag" in reasons[0]
    status, _ = grade(loop_lag_ms=5000, cpu_percent=10, jobs_done=0, jobs_failed=0)
    assert status == "unhealthy"


def test_failure_ratio_needs_enough_jobs():
    assert grade(loop_lag_ms=0, cpu_percent=0, jobs_done=5, jobs_failed=5)[0] == "healthy"
    assert grade(loop_lag_ms=0, cpu_percent=0, jobs_done=100, jobs_failed=60)[0] == "degraded"
    assert grade(loop_lag_ms=0, cpu_percent=0, jobs_done=100, jobs_failed=99)[0] == "unhealthy"


def test_cpu_only_degrades():
    assert grade(loop_lag_ms=0, cpu_percent=99, jobs_done=0, jobs_failed=0)[0] == "degraded"
