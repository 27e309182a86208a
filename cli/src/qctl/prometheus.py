"""A real Prometheus in front of a local stack: the shipped scrape jobs and alert rules
(infra/prometheus) with the stack's loopback addresses in place of compose's DNS discovery.

Used by `bench/scrape_overhead.py` and the observability end-to-end test; needs the
`prometheus` binary (Debian's `prometheus` package).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from qctl.processes import port_in_use
from qctl.stack import Stack
from qshared.errors import QstackError

INFRA = Path(__file__).resolve().parents[3] / "infra" / "prometheus"


class PrometheusError(QstackError):
    """Prometheus could not be started or did not answer."""

    code = "prometheus_failed"


def stack_targets(stack: Stack) -> dict[str, list[str]]:
    """Each shipped scrape job's targets (host:port) in a local stack.

    `queue-system` (the spec's /admin/metrics behind the gateway) goes to the schedulers.
    """
    by_kind: dict[str, list[str]] = {}
    for service in stack.services.values():
        by_kind.setdefault(service.kind, []).append(f"{service.host}:{service.port}")
    return {
        "queue-workers": by_kind.get("worker", []),
        "queue-system": by_kind.get("scheduler", []),
        "registry": by_kind.get("registry", []),
        "scheduler": by_kind.get("scheduler", []),
        "failover": by_kind.get("failover", []),
    }


def local_config(
    targets: Mapping[str, Sequence[str]], *, token_file: Path, interval: str = "1s",
    rules: Sequence[Path] = (), shipped: Path = INFRA / "prometheus.yml",
) -> dict[str, Any]:
    """The shipped prometheus.yml with static targets, one scrape interval and local files.

    Jobs without targets (no failover watcher, say) are left out.
    """
    config = yaml.safe_load(shipped.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(r) for r in rules]
    jobs = []
    for job in config["scrape_configs"]:
        found = list(targets.get(job["job_name"], ()))
        if not found:
            continue
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": found}]
        job["scrape_interval"] = interval
        job["scrape_timeout"] = interval
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


class LocalPrometheus:
    """A Prometheus process with its own data directory; a context manager."""

    def __init__(
        self, targets: Mapping[str, Sequence[str]], token: str, state_dir: Path, port: int,
        *, interval: str = "1s", with_rules: bool = True, binary: str = "prometheus",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise PrometheusError(
                f"{binary!r} is not on PATH (Debian: apt-get install prometheus)")
        self.binary, self.port, self.state_dir = path, port, Path(state_dir).absolute()
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        token_file = self.state_dir / "token"
        token_file.write_text(token)
        rules = []
        if with_rules:
            rules = [self.state_dir / "alerts.yml"]
            shutil.copy(INFRA / "alerts.yml", rules[0])
        self.config = local_config(targets, token_file=token_file, interval=interval, rules=rules)
        self.config_path = self.state_dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.state_dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if port_in_use("127.0.0.1", self.port):
            raise PrometheusError(f"port {self.port} is in use")
        data = self.state_dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus was not ready within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def set_scraping(self, on: bool) -> None:
        """Scrape every target (on) or none (off), through a configuration reload."""
        config = dict(self.config, scrape_configs=self.config["scrape_configs"] if on else [])
        self.config_path.write_text(yaml.safe_dump(config))
        resp = httpx.post(self.url + "/-/reload", timeout=30)
        if resp.status_code != 200:
            raise PrometheusError(f"reload failed: {resp.status_code} {resp.text}")

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns its `data`, raises on an error status."""
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error', resp.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples; [] when it has none)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def targets_up(self) -> dict[str, bool]:
        """scrape URL -> last scrape healthy."""
        return {t["scrapeUrl"]: t["health"] == "up" for t in self.api("targets")["activeTargets"]}

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
