"""Retention without a database: the settings, the request schemas, the storage's argument
checks and qctl's clean-up options."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from qctl.__main__ import rewrite_colon_commands
from qctl.app import COMMANDS, cli
from qfailover.retention import Policy
from qshared.config import Settings, load_settings
from qshared.errors import ConfigError, ValidationFailed
from qshared.http import describe_validation
from qshared.schemas import CleanupDaysIn, CleanupJobsIn
from qshared.storage.base import finished_statuses, retention_seconds

RETENTION_VARIABLES = ("QSTACK_RETENTION_INTERVAL", "QSTACK_RETENTION_HEALTH_CHECKS_DAYS",
                       "QSTACK_RETENTION_FAILOVER_EVENTS_DAYS", "QSTACK_RETENTION_JOBS_DAYS",
                       "QSTACK_RETENTION_DEAD_JOBS_DAYS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RETENTION_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- settings ---------------------------------------------------------------------------
def test_the_policy_defaults_are_the_specifications() -> None:
    policy = Policy.from_settings(load_settings())
    assert policy.as_dict() == {"interval_s": 3600, "health_checks_days": 30,
                                "failover_events_days": 90, "jobs_days": 7,
                                "dead_jobs_days": 30}


def test_the_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in zip(RETENTION_VARIABLES, ("60", "0.5", "0", "1", "2"), strict=True):
        monkeypatch.setenv(name, value)
    assert Policy.from_settings(load_settings()) == Policy(60, 0.5, 0, 1, 2)


@pytest.mark.parametrize("name", RETENTION_VARIABLES)
def test_a_negative_retention_names_its_variable(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ConfigError, match=name):
        load_settings()


# -- request bodies -----------------------------------------------------------------------
@pytest.mark.parametrize("days", [0, 30, 0.25, 36500])
def test_days_accepts_numbers_from_0(days: float) -> None:
    assert CleanupDaysIn.model_validate({"days": days}).days == days


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "days: Field required"), ({"days": -1}, "greater than or equal to 0"),
    ({"days": "abc"}, "valid number"), ({"days": "30"}, "valid number"),
    ({"days": True}, "valid number"), ({"days": 36501}, "less than or equal"),
    ({"days": 1, "extra": 1}, "extra: Extra inputs"),
])
def test_days_refuses_the_rest_and_says_why(body: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CleanupDaysIn.model_validate(body)
    assert needle in describe_validation(exc.value)


def test_job_statuses_default_dedupe_and_name_a_bad_one() -> None:
    assert CleanupJobsIn.model_validate({"days": 1}).statuses == ["succeeded", "cancelled"]
    assert CleanupJobsIn.model_validate(
        {"days": 1, "statuses": ["dead", "succeeded", "dead"]}).statuses == ["succeeded", "dead"]
    for statuses, needle in ((["succeeded", "running"], "'running' is not a finished state"),
                             ([], "at least 1 item"), (["bogus"], "'bogus'")):
        with pytest.raises(ValidationError) as exc:
            CleanupJobsIn.model_validate({"days": 1, "statuses": statuses})
        message = describe_validation(exc.value)
        assert message.startswith("statuses") and needle in message, message


# -- the storage's argument checks -------------------------------------------------------
def test_retention_seconds() -> None:
    assert retention_seconds(0) == 0
    assert retention_seconds(1.5) == 1.5 * 86400
    for bad in (-1, float("nan"), float("inf"), "1", None, True, 36500.5):
        with pytest.raises(ValidationFailed, match="days"):
            retention_seconds(bad)  # type: ignore[arg-type]


def test_finished_statuses() -> None:
    assert finished_statuses(["cancelled", "dead", "cancelled"]) == ["dead", "cancelled"]
    assert finished_statuses([]) == []
    with pytest.raises(ValidationFailed, match="'assigned'"):
        finished_statuses(["dead", "assigned"])


# -- qctl ---------------------------------------------------------------------------------
def test_the_specifications_spelling_parses() -> None:
    groups = list(COMMANDS)
    assert rewrite_colon_commands(["queue:cleanup-health-checks", "--days=30"], groups) == [
        "queue", "cleanup-health-checks", "--days=30"]
    assert rewrite_colon_commands(["queue:cleanup-orphaned-assignments"], groups) == [
        "queue", "cleanup-orphaned-assignments"]


@pytest.mark.parametrize(("args", "needle"), [
    (("queue", "cleanup-health-checks"), "Missing option '--days'"),
    (("queue", "cleanup-health-checks", "--days", "-1"), "-1 is not between 0 and 36500 days"),
    (("queue", "cleanup-failover-events", "--days=abc"), "'abc' is not a number of days"),
    (("queue", "cleanup-failover-events", "--days", "nan"), "nan is not between"),
    (("queue", "cleanup-jobs", "--days", "1", "--status", "running"),
     "'running' is not one of 'succeeded', 'cancelled', 'dead'"),
    (("queue", "retention", "--run=yes"), "--run"),
])
def test_bad_options_are_usage_errors_before_any_request(args: tuple[str, ...],
                                                         needle: str) -> None:
    # no service is reachable at port 1: a request would be exit code 3, not 2
    result = CliRunner().invoke(cli, ["--failover-url", "http://127.0.0.1:1", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_settings_have_a_description_each() -> None:
    for name in RETENTION_VARIABLES:
        assert Settings.model_fields[name.lower()].description
