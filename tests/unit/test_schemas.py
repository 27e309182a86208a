"""API schemas: what a job submission may and may not contain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from qshared.schemas import JobBatchIn, JobIn


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_a_normal_job_is_accepted_with_defaults() -> None:
    job = JobIn.model_validate({"task": "send_email", "payload": {"to": "a@b.c"}})
    assert (job.task, job.queue, job.payload, job.priority) == (
        "send_email", None, {"to": "a@b.c"}, 0
    )
    assert (job.delay_s, job.run_at, job.max_attempts, job.timeout_s) == (None, None, None, None)
    assert (job.unique_key, job.lock_key) == (None, None)
    assert job.start_delay() == 0.0


def test_a_full_job_is_accepted() -> None:
    job = JobIn.model_validate({
        "task": "reports.build", "queue": "reports", "payload": [1, "two", None],
        "priority": -5, "delay_s": 2.5, "max_attempts": 7, "timeout_s": 60,
        "unique_key": "report:2024", "lock_key": "reports",
    })
    assert (job.queue, job.priority, job.max_attempts, job.timeout_s) == ("reports", -5, 7, 60.0)
    assert job.start_delay() == 2.5


def test_run_at_with_a_zone_gives_the_start_delay() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    later = now + timedelta(minutes=5)
    job = JobIn.model_validate({"task": "t", "run_at": later.isoformat()})
    assert job.start_delay(now) == 300.0
    assert job.start_delay(later + timedelta(hours=1)) == 0.0  # never negative
    cet = JobIn.model_validate({"task": "t", "run_at": "2030-01-01T13:05:00+01:00"})
    assert cet.run_at.utcoffset() == timedelta(hours=1)
    assert cet.start_delay(now) == 300.0
    assert cet.run_at.astimezone(UTC) == later


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        JobIn.model_validate({"task": "t", "queue_name": "oops"})
    assert "queue_name" in error_fields(caught.value)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "task"),
        ({"task": 42}, "task"),
        ({"task": "has spaces"}, "task"),
        ({"task": ""}, "task"),
        ({"task": "t", "priority": "high"}, "priority"),
        ({"task": "t", "priority": 1.5}, "priority"),
        ({"task": "t", "priority": 1001}, "priority"),
        ({"task": "t", "max_attempts": 0}, "max_attempts"),
        ({"task": "t", "timeout_s": 0}, "timeout_s"),
        ({"task": "t", "delay_s": "soon"}, "delay_s"),
        ({"task": "t", "run_at": "tomorrow"}, "run_at"),
        ({"task": "t", "queue": "a/b"}, "queue"),
        ({"task": "t", "unique_key": ""}, "unique_key"),
        ({"task": "t", "unique_key": "k" * 256}, "unique_key"),
    ],
)
def test_wrong_types_and_ranges_are_rejected(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobIn.model_validate(body)
    assert field in error_fields(caught.value)


def test_a_negative_delay_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        JobIn.model_validate({"task": "t", "delay_s": -1})
    assert error_fields(caught.value) == {"delay_s"}


def test_delay_and_run_at_together_are_rejected() -> None:
    with pytest.raises(ValidationError, match="delay_s or run_at"):
        JobIn.model_validate(
            {"task": "t", "delay_s": 5, "run_at": "2030-01-01T00:00:00Z"}
        )


def test_a_naive_run_at_is_rejected() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        JobIn.model_validate({"task": "t", "run_at": "2030-01-01T00:00:00"})


def test_a_batch_needs_at_least_one_job_and_checks_each() -> None:
    assert len(JobBatchIn.model_validate({"jobs": [{"task": "a"}, {"task": "b"}]}).jobs) == 2
    with pytest.raises(ValidationError):
        JobBatchIn.model_validate({"jobs": []})
    with pytest.raises(ValidationError) as caught:
        JobBatchIn.model_validate({"jobs": [{"task": "a"}, {"task": "b", "extra": 1}]})
    assert "jobs.1.extra" in error_fields(caught.value)
