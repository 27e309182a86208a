"""Typed settings read from the specification's environment variables."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qshared.errors import ConfigError


class Settings(BaseSettings):
    """Every setting of qstack, named as the specification's environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", validate_default=True
    )

    # Database (specification)
    db_host: str = Field("127.0.0.1", description="Database host (DB_HOST).")
    db_port: int = Field(5432, ge=1, le=65535, description="Database port (DB_PORT).")
    db_name: str = Field("qstack", description="Database name (DB_NAME).")
    db_user: str = Field("postgres", description="Database user (DB_USER).")
    db_pass: str = Field("", description="Database password (DB_PASS).")
    db_driver: Literal["postgresql", "mysql"] = Field(
        "postgresql", description="SQL dialect used with DB_HOST etc. (DB_DRIVER)."
    )
    database_url: str | None = Field(
        None, description="One-line alternative to DB_*: postgresql://user:pass@host:port/db."
    )
    db_owner_url: str | None = Field(
        None, description="DSN of the schema's owner account, for schema changes: `qctl db "
        "migrate` and `qctl restore` use it when given (DB_OWNER_URL); the services keep "
        "the least-privilege DB_* / DATABASE_URL account.",
    )
    db_pool_size: int = Field(20, ge=1, le=1000, description="Connections per service pool.")
    db_max_idle_time: float = Field(
        3600, gt=0, description="Seconds an idle pooled connection is kept (DB_MAX_IDLE_TIME)."
    )

    # Queue (specification)
    queue_driver: Literal["database", "redis"] = Field(
        "database", description="Where jobs live: the SQL database or Redis (QUEUE_DRIVER)."
    )
    queue_default: str = Field("default", min_length=1, description="Queue for jobs naming none.")
    redis_url: str | None = Field(None, description="Redis URL for QUEUE_DRIVER=redis.")
    cache_ttl: float = Field(3600, ge=0, description="Seconds cached read models are kept.")

    # Workers and failover (specification; defaults tuned for fast failover)
    worker_health_check_interval: float = Field(
        2.0, gt=0, description="Seconds between worker heartbeats / health-check rows."
    )
    worker_registration_ttl: float = Field(
        10.0, gt=0, description="Seconds without a heartbeat before a worker counts as dead."
    )
    failover_check_interval: float = Field(
        1.0, gt=0, description="Seconds between failover watcher passes."
    )
    node_role: Literal["registry", "scheduler", "worker", "failover", "all"] = Field(
        "worker", description="Which service this node runs (NODE_ROLE)."
    )
    worker_queues: str = Field("default", description="Comma-separated queues a worker serves.")
    worker_concurrency: int = Field(4, ge=1, le=1024, description="Jobs a worker runs at once.")
    worker_prefetch: int | None = Field(
        None, ge=0, le=100000,
        description="Jobs assigned to a worker beyond its concurrency (default 4 x concurrency).",
    )
    worker_grace_period: float = Field(
        30.0, ge=0, description="Seconds a stopping worker lets in-flight jobs finish."
    )
    worker_app: str | None = Field(None, description="Module whose import registers user tasks.")

    # Monitoring (specification)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Log level (LOG_LEVEL)."
    )
    performance_monitoring: bool = Field(True, description="Collect timing histograms.")
    health_check_endpoint: str = Field("/health", description="Path of the health endpoint.")

    # qstack's own
    qstack_token: str | None = Field(None, description="Bearer token for API and admin routes.")
    qstack_host: str = Field("127.0.0.1", description="Address the service listens on.")
    qstack_port: int = Field(8080, ge=0, le=65535, description="Port the service listens on.")
    qstack_advertise_url: str | None = Field(
        None, description="URL other components use to reach this process."
    )
    qstack_registry_url: str = Field(
        "http://127.0.0.1:8081", description="Base URL of the registry service."
    )
    qstack_scheduler_url: str = Field(
        "http://127.0.0.1:8082", description="Base URL of the scheduler service."
    )
    qstack_max_payload_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest accepted job payload (encoded JSON bytes)."
    )
    qstack_max_batch: int = Field(10000, ge=1, description="Most jobs accepted in one batch.")
    qstack_leader_ttl: float = Field(5.0, gt=0, description="Seconds a leader lease lasts.")
    qstack_dispatch_poll: float = Field(
        1.0, gt=0, description="Seconds between dispatcher passes when nothing wakes it."
    )
    qstack_dispatch_batch: int = Field(1000, ge=1, description="Most jobs one dispatch pass assigns.")
    qstack_report_interval: float = Field(
        0.005, gt=0, description="Seconds a worker gathers completions before writing them."
    )
    qstack_retry_base: float = Field(1.0, ge=0, description="First retry delay in seconds.")
    qstack_retry_max: float = Field(3600.0, ge=0, description="Longest retry delay in seconds.")
    qstack_default_max_attempts: int = Field(3, ge=1, description="Attempts for jobs naming none.")
    qstack_default_timeout: float = Field(300.0, gt=0, description="Job timeout naming none.")
    qstack_quarantine_after: int = Field(
        3, ge=1, description="Workers a job may take down before it is quarantined (dead)."
    )
    qstack_timeout_grace: float = Field(
        30.0, ge=0, description="Seconds past its timeout before a running job is recovered."
    )
    qstack_lock_grace: float = Field(
        60.0, ge=0, description="Seconds an expired lock row stays visible before clean-up."
    )

    # Retention: the failover leader's scheduled clean-ups (days may be fractions; 0 = keep)
    qstack_retention_interval: float = Field(
        3600.0, ge=0, description="Seconds between the failover leader's retention runs (0: off)."
    )
    qstack_retention_health_checks_days: float = Field(
        30.0, ge=0, le=36500, description="Days worker_health_checks rows are kept (0: forever)."
    )
    qstack_retention_failover_events_days: float = Field(
        90.0, ge=0, le=36500, description="Days failover_events rows are kept (0: forever)."
    )
    # A week: enough to look into last week's results and unique_key duplicates, while the
    # jobs table (every dispatch and status change works on it) stays small.
    qstack_retention_jobs_days: float = Field(
        7.0, ge=0, le=36500,
        description="Days succeeded and cancelled jobs (with their assignments) are kept after "
                    "they finish (0: forever).",
    )
    qstack_retention_dead_jobs_days: float = Field(
        30.0, ge=0, le=36500,
        description="Days dead jobs (with their assignments) are kept after they die (0: forever).",
    )

    @field_validator("worker_queues")
    @classmethod
    def _queues_not_empty(cls, value: str) -> str:
        if not [q for q in value.split(",") if q.strip()]:
            raise ValueError("must name at least one queue")
        return value

    @property
    def queues(self) -> list[str]:
        """WORKER_QUEUES as a list."""
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    @property
    def prefetch(self) -> int:
        """Jobs the dispatcher may assign beyond a worker's concurrency."""
        if self.worker_prefetch is not None:
            return self.worker_prefetch
        return 4 * self.worker_concurrency

    @property
    def dsn(self) -> str:
        """The database URL, from DATABASE_URL or the DB_* variables."""
        if self.database_url:
            return self.database_url
        auth = quote(self.db_user, safe="")
        if self.db_pass:
            auth += ":" + quote(self.db_pass, safe="")
        return f"{self.db_driver}://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; a bad value raises ConfigError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
