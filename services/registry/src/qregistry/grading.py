"""Health grading: a worker's measurements to healthy, degraded or unhealthy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where degraded and unhealthy begin."""

    lag_degraded_ms: float = 200.0
    lag_unhealthy_ms: float = 2000.0
    cpu_degraded: float = 90.0
    failure_ratio_degraded: float = 0.5
    failure_ratio_unhealthy: float = 0.95
    min_jobs_for_ratio: int = 20


def grade(
    *, loop_lag_ms: float, cpu_percent: float, jobs_done: int, jobs_failed: int,
    limits: Thresholds = Thresholds(),
) -> tuple[str, list[str]]:
    """Grade one health report.

    Returns:
        The status and the reasons for anything worse than healthy.
    """
    reasons: list[str] = []
    status = "healthy"
    ratio = jobs_failed / jobs_done if jobs_done >= limits.min_jobs_for_ratio else 0.0
    if loop_lag_ms >= limits.lag_unhealthy_ms:
        reasons.append(f"event loop lag {loop_lag_ms:.0f} ms")
        status = "unhealthy"
    elif loop_lag_ms >= limits.lag_degraded_ms:
        reasons.append(f"event loop lag {loop_lag_ms:.0f} ms")
        status = "degraded"
    if ratio >= limits.failure_ratio_unhealthy:
        reasons.append(f"{ratio:.0%} of recent jobs failed")
        status = "unhealthy"
    elif ratio >= limits.failure_ratio_degraded:
        reasons.append(f"{ratio:.0%} of recent jobs failed")
        status = "degraded" if status == "healthy" else status
    if cpu_percent >= limits.cpu_degraded:
        reasons.append(f"cpu {cpu_percent:.0f}%")
        status = "degraded" if status == "healthy" else status
    return status, reasons
