"""compose.yaml, Dockerfile and .env.example: Compose itself validates the file, and plain
Python checks that every command is a console script of the workspace, every variable a
qstack setting, and the worker the specification's scalable service.

`docker-compose` comes from Debian's `docker-compose` package (`apt-get install -y
docker-compose`); the Compose v2 plugin (`docker compose`) is used when that is missing.
Without either, the validation tests skip with the reason, except under CI (`CI` set), where
they fail. The consistency checks need PyYAML (the dev group's `pyyaml`), likewise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tooling import read_env_file, skip_or_fail

from qshared.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

SETTINGS = {name.upper() for name in Settings.model_fields}
# The database images read their own variables; only these, and only in these services.
IMAGE_VARIABLES = {"postgres": ("POSTGRES_",), "mysql": ("MYSQL_",), "redis": (),
                   "grafana": ("GF_",), "nginx": (), "prometheus": ()}
SERVICES = {"registry", "scheduler", "worker", "failover", "qctl"}  # Dockerfile's SERVICE
# The specification's worker healthcheck (section 3).
SPEC_HEALTHCHECK = {"test": ["CMD", "qworker", "health"], "interval": "30s", "timeout": "10s",
                    "retries": 3, "start_period": "10s"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# ------------------------------------------------------------------------- Compose itself

def _compose() -> list[str]:
    if path := shutil.which("docker-compose"):
        return [path]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    skip_or_fail("docker-compose not found: install Debian's `docker-compose` package "
                  "(apt-get install -y docker-compose)")
    raise AssertionError("unreachable")


def _config(*args: str, env_file: Path | None = None) -> str:
    cmd = _compose()
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    cmd += ["-f", str(COMPOSE), *args]
    # Variables exported in the caller's shell would override the file's defaults.
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def test_compose_config_is_valid():
    out = _config("config")
    assert "qworker" in out


def test_compose_config_with_env_example():
    out = _config("config", env_file=ENV_EXAMPLE)
    assert "QSTACK_TOKEN: change-me" in out


def test_compose_config_with_every_profile():
    # docker-compose 1.x lists every service whatever the profile, so which services a
    # profile adds is checked on the parsed file below (test_optional_backends_are_profiles).
    out = _config("--profile", "mysql", "--profile", "redis", "config")
    assert "mysql:8.4" in out and "redis:7" in out


def test_compose_config_with_the_mysql_profile(tmp_path: Path):
    """The documented MySQL set-up: every qstack service reaches the `mysql` service with
    the .env's account, which the MySQL image creates from the same values."""
    import yaml

    env_file = tmp_path / "mysql.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "\nDB_DRIVER=mysql\nDB_HOST=mysql\n"
                        "DB_PORT=3306\nDB_NAME=jobs\nDB_USER=jobs_app\nDB_PASS=s3cret\n"
                        "DB_OWNER_URL=mysql://jobs_owner:0wner@mysql:3306/jobs\n")
    config = yaml.safe_load(_config("--profile", "mysql", "config", env_file=env_file))
    services = config["services"]
    mysql = _environment(services["mysql"])
    assert (mysql["MYSQL_DATABASE"], mysql["MYSQL_USER"], mysql["MYSQL_PASSWORD"]) == (
        "jobs", "jobs_app", "s3cret")
    for name in ("migrate", "registry", "scheduler", "failover", "worker"):
        env = _environment(services[name])
        settings = load_settings(**{k.lower(): v for k, v in env.items()})
        assert settings.dsn == "mysql://jobs_app:s3cret@mysql:3306/jobs", name
    owner = _environment(services["migrate"])["DB_OWNER_URL"]
    assert owner == "mysql://jobs_owner:0wner@mysql:3306/jobs"


# --------------------------------------------------------------------- pure consistency

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        skip_or_fail("PyYAML not installed: add `pyyaml` to the root dev dependency group")
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<:` merge keys


def _console_scripts() -> set[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: set[str] = set()
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for member in ROOT.glob(pattern):
            project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
            scripts |= set(project.get("scripts", {}))
    return scripts


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _with_defaults(value: str) -> str:
    """The value Compose gives without an .env: `${X:-default}` becomes `default`."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def test_commands_are_workspace_console_scripts(compose: dict[str, Any]):
    scripts = _console_scripts()
    assert {"qregistry", "qscheduler", "qworker", "qfailover", "qctl"} <= scripts
    for name, service in compose["services"].items():
        if "build" not in service:
            continue  # third-party images (postgres, mysql, redis) run their own programs
        for key in ("command", "entrypoint"):
            if key in service:
                argv = service[key] if isinstance(service[key], list) else service[key].split()
                assert argv[0] in scripts, f"{name}.{key}: {argv[0]!r} is no console script"
        assert "command" in service or "entrypoint" in service, f"{name} names no command"


def test_build_args_name_dockerfile_services(compose: dict[str, Any]):
    dockerfile = DOCKERFILE.read_text()
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "Dockerfile"
            assert service["build"]["args"]["SERVICE"] in SERVICES, name
    for svc in SERVICES:
        assert re.search(rf"\b{svc}\b", dockerfile.split("esac")[0]), svc
    assert "--no-install-workspace" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"


def test_environment_is_known_settings(compose: dict[str, Any]):
    for name, service in compose["services"].items():
        extra = IMAGE_VARIABLES.get(name, ()) if "build" not in service else ()
        env = _environment(service)
        for key in env:
            assert key in SETTINGS or (extra and key.startswith(extra)), (
                f"{name}: {key} is not a qstack setting (shared/src/qshared/config.py)")
        if "build" in service:
            # The values (with Compose's defaults) are valid settings, too.
            load_settings(**{k.lower(): _with_defaults(v) for k, v in env.items()})


def test_app_services_wait_for_migrate(compose: dict[str, Any]):
    services = compose["services"]
    # migrate waits for whichever database the profile runs (PostgreSQL or MySQL) itself
    assert services["migrate"]["command"] == ["qctl", "db", "migrate", "--wait", "120"]
    assert "depends_on" not in services["migrate"]
    assert _environment(services["migrate"])["DB_OWNER_URL"] == "${DB_OWNER_URL:-}"
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    for name in ("registry", "scheduler", "failover", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully", name
    ports = {"registry": "8081", "scheduler": "8082", "failover": "8083", "worker": "9090"}
    for name, port in ports.items():
        env = _environment(services[name])
        assert env["QSTACK_PORT"] == port and env["QSTACK_HOST"] == "0.0.0.0", name
        assert env["QSTACK_REGISTRY_URL"] == "http://registry:8081"
        assert env["QSTACK_SCHEDULER_URL"] == "http://scheduler:8082"
        assert env["NODE_ROLE"] == name
    assert services["scheduler"]["deploy"]["replicas"] == 2


def test_worker_is_the_specifications_scalable_service(compose: dict[str, Any]):
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == ["qworker", "start"]
    assert worker["restart"] == "unless-stopped"
    assert worker["healthcheck"] == SPEC_HEALTHCHECK
    assert worker["deploy"]["resources"] == {
        "limits": {"memory": "2G", "cpus": "2"}, "reservations": {"memory": "1G", "cpus": "1"}}
    env = _environment(worker)
    assert env["WORKER_QUEUES"] == "default,emails,reports"
    assert env["WORKER_CONCURRENCY"] == "4"
    for key in ("DB_HOST", "DB_NAME", "DB_USER", "DB_PASS", "QSTACK_TOKEN"):
        assert _INTERPOLATION.fullmatch(env[key]), f"{key} must come from the env file"


def test_env_example_is_known_settings():
    pairs = read_env_file(ENV_EXAMPLE)
    unknown = set(pairs) - SETTINGS
    assert not unknown, f".env.example: not qstack settings: {sorted(unknown)}"
    spec = {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "QUEUE_DRIVER",
            "QUEUE_DEFAULT", "WORKER_HEALTH_CHECK_INTERVAL", "WORKER_REGISTRATION_TTL",
            "FAILOVER_CHECK_INTERVAL", "DB_POOL_SIZE", "DB_MAX_IDLE_TIME", "CACHE_TTL",
            "LOG_LEVEL", "PERFORMANCE_MONITORING", "HEALTH_CHECK_ENDPOINT", "QSTACK_TOKEN"}
    assert spec <= set(pairs), f"missing: {sorted(spec - set(pairs))}"
    load_settings(**{k.lower(): v for k, v in pairs.items()})  # every value is valid


def test_optional_backends_are_profiles(compose: dict[str, Any]):
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16" and "profiles" not in services["postgres"]
    assert services["mysql"]["image"] == "mysql:8.4" and services["mysql"]["profiles"] == ["mysql"]
    assert services["redis"]["image"] == "redis:7" and services["redis"]["profiles"] == ["redis"]
    assert "version" not in compose


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (named volumes left out)."""
    mounts = []
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith((".", "/")):
            mounts.append((host, container))
    return mounts


def test_monitoring_and_gateway_services_use_the_shipped_files(compose: dict[str, Any]):
    services = compose["services"]
    for name, service in services.items():
        for host, _ in _bind_mounts(service):
            assert (ROOT / host).exists(), f"{name} mounts {host}, which does not exist"
        for env_file in service.get("env_file", []):
            assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file} is missing"
    nginx = dict((c, h) for h, c in _bind_mounts(services["nginx"]))
    assert nginx["/etc/nginx/templates"] == "./infra/nginx/templates"
    assert (ROOT / "infra/nginx/templates/default.conf.template").is_file()
    gateway_env = read_env_file(ROOT / "infra/nginx/gateway.env")
    template = (ROOT / "infra/nginx/templates/default.conf.template").read_text()
    assert set(re.findall(r"\$\{(QSTACK_\w+)\}", template)) == set(gateway_env)
    # Only the gateway publishes a port on every address; Prometheus and Grafana on loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "nginx":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    prom = dict((c, h) for h, c in _bind_mounts(services["prometheus"]))
    assert prom["/etc/prometheus/prometheus.yml"] == "./infra/prometheus/prometheus.yml"
    assert prom["/etc/prometheus/alerts.yml"] == "./infra/prometheus/alerts.yml"
    # The token file prometheus.yml reads is written from QSTACK_TOKEN before Prometheus starts.
    assert "/etc/prometheus/token" in " ".join(services["prometheus"]["command"])
    assert "credentials_file: /etc/prometheus/token" in \
        (ROOT / "infra/prometheus/prometheus.yml").read_text()
    grafana = dict((c, h) for h, c in _bind_mounts(services["grafana"]))
    assert grafana["/etc/grafana/provisioning"] == "./infra/grafana/provisioning"
    assert grafana["/var/lib/grafana/dashboards"] == "./infra/grafana/dashboards"
    home = _environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "infra/grafana/dashboards" / Path(home).name).is_file()
