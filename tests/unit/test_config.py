"""Settings: the specification's variable names, defaults, overrides, DSNs and bad values."""

from __future__ import annotations

import pytest

from qshared.config import Settings, load_settings
from qshared.errors import ConfigError

# DESIGN.md, Configuration: the specification's environment variables keep their names.
SPEC_VARIABLES = (
    "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "QUEUE_DRIVER", "QUEUE_DEFAULT",
    "WORKER_HEALTH_CHECK_INTERVAL", "WORKER_REGISTRATION_TTL", "FAILOVER_CHECK_INTERVAL",
    "DB_POOL_SIZE", "DB_MAX_IDLE_TIME", "CACHE_TTL", "LOG_LEVEL", "PERFORMANCE_MONITORING",
    "HEALTH_CHECK_ENDPOINT", "NODE_ROLE", "WORKER_QUEUES", "WORKER_CONCURRENCY",
    "DATABASE_URL", "REDIS_URL",
)

# The production .env of the specification, verbatim.
SPEC_ENV_FILE = {
    "DB_HOST": "production-db-cluster", "DB_PORT": "3306", "DB_NAME": "framework_production",
    "DB_USER": "queue_user", "DB_PASS": "secure_production_password",
    "QUEUE_DRIVER": "database", "QUEUE_DEFAULT": "default",
    "WORKER_HEALTH_CHECK_INTERVAL": "30", "WORKER_REGISTRATION_TTL": "300",
    "FAILOVER_CHECK_INTERVAL": "60", "DB_POOL_SIZE": "20", "DB_MAX_IDLE_TIME": "3600",
    "CACHE_TTL": "3600", "LOG_LEVEL": "info", "PERFORMANCE_MONITORING": "true",
    "HEALTH_CHECK_ENDPOINT": "/health",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the shell that runs the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def test_every_specification_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    missing = [v for v in SPEC_VARIABLES if v.lower() not in fields]
    assert missing == []


def test_defaults() -> None:
    s = load_settings()
    assert (s.db_host, s.db_port, s.db_name, s.db_user, s.db_pass) == (
        "127.0.0.1", 5432, "qstack", "postgres", ""
    )
    assert (s.database_url, s.redis_url) == (None, None)
    assert (s.queue_driver, s.queue_default) == ("database", "default")
    assert (s.db_pool_size, s.db_max_idle_time, s.cache_ttl) == (20, 3600, 3600)
    assert (s.log_level, s.performance_monitoring, s.health_check_endpoint) == (
        "info", True, "/health"
    )
    assert (s.node_role, s.queues, s.worker_concurrency) == ("worker", ["default"], 4)
    # tuned for fast failover: detection well inside the registration TTL
    assert 0 < s.failover_check_interval <= s.worker_health_check_interval
    assert s.worker_health_check_interval < s.worker_registration_ttl
    # unset WORKER_PREFETCH: a multiple of the concurrency
    assert s.worker_prefetch is None and s.prefetch > 0
    assert load_settings(worker_concurrency=8).prefetch == 2 * s.prefetch
    assert s.dsn == "postgresql://postgres@127.0.0.1:5432/qstack"


def test_the_specifications_env_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SPEC_ENV_FILE.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.db_host, s.db_port, s.db_name, s.db_user) == (
        "production-db-cluster", 3306, "framework_production", "queue_user"
    )
    assert s.db_pass == "secure_production_password"
    assert (s.worker_health_check_interval, s.worker_registration_ttl) == (30, 300)
    assert (s.failover_check_interval, s.performance_monitoring) == (60, True)
    assert s.dsn == (
        "postgresql://queue_user:secure_production_password"
        "@production-db-cluster:3306/framework_production"
    )


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("DB_HOST", "db.internal", "db_host", "db.internal"),
        ("DB_PORT", "3307", "db_port", 3307),
        ("QUEUE_DRIVER", "redis", "queue_driver", "redis"),
        ("QUEUE_DEFAULT", "emails", "queue_default", "emails"),
        ("WORKER_QUEUES", "default, emails ,reports", "queues", ["default", "emails", "reports"]),
        ("WORKER_CONCURRENCY", "16", "worker_concurrency", 16),
        ("WORKER_PREFETCH", "0", "prefetch", 0),
        ("NODE_ROLE", "scheduler", "node_role", "scheduler"),
        ("LOG_LEVEL", "debug", "log_level", "debug"),
        ("PERFORMANCE_MONITORING", "false", "performance_monitoring", False),
        ("REDIS_URL", "redis://cache:6379/1", "redis_url", "redis://cache:6379/1"),
        ("db_name", "lowercase_works", "db_name", "lowercase_works"),
    ],
)
def test_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), attribute) == expected


def test_direct_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_CONCURRENCY", "8")
    assert load_settings(worker_concurrency=2).worker_concurrency == 2


def test_database_url_wins_over_db_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "ignored")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db:5433/jobs")
    assert load_settings().dsn == "postgresql://app:pw@db:5433/jobs"


def test_dsn_from_db_variables_quotes_user_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_DRIVER", "mysql")
    monkeypatch.setenv("DB_HOST", "mysql.internal")
    monkeypatch.setenv("DB_PORT", "3306")
    monkeypatch.setenv("DB_NAME", "queue")
    monkeypatch.setenv("DB_USER", "queue user")
    monkeypatch.setenv("DB_PASS", "p@ss:w/rd%#?")
    assert load_settings().dsn == (
        "mysql://queue%20user:p%40ss%3Aw%2Frd%25%23%3F@mysql.internal:3306/queue"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKER_CONCURRENCY", "abc"),
        ("WORKER_CONCURRENCY", "0"),
        ("DB_PORT", "0"),
        ("DB_PORT", "70000"),
        ("DB_POOL_SIZE", "-1"),
        ("QUEUE_DRIVER", "kafka"),
        ("LOG_LEVEL", "verbose"),
        ("NODE_ROLE", "everything"),
        ("WORKER_HEALTH_CHECK_INTERVAL", "0"),
        ("WORKER_QUEUES", " , "),
        ("PERFORMANCE_MONITORING", "maybe"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)  # and shows what it got


def test_several_bad_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "0")
    monkeypatch.setenv("WORKER_CONCURRENCY", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DB_PORT" in caught.value.message and "WORKER_CONCURRENCY" in caught.value.message
