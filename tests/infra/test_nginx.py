"""The nginx gateway in infra/nginx: its template rendered as the official nginx image renders
it, run by a real nginx on loopback in front of a real stack (registry, two scheduler
replicas, failover, one worker), and in front of small Python servers where the request
nginx sends upstream has to be seen.

nginx comes from Debian's `nginx` package (`apt-get install -y nginx`; found on PATH or in
/usr/sbin, which a non-root PATH lacks). Without it the tests that run it skip with the
reason, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from e2e_helpers import wait_until
from tooling import free_port, read_env_file, require_tool

from qshared.openapi import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "infra" / "nginx"
TEMPLATE = NGINX_DIR / "templates" / "default.conf.template"
GATEWAY_ENV = NGINX_DIR / "gateway.env"
README = NGINX_DIR / "README.md"
OPEN = "allow 127.0.0.0/8; "  # prepended to the default allow-list for the "open" gateway
SERVER = "server {} max_fails=3 fail_timeout=30s;"
# The main configuration the rendered file is included into, like the image's nginx.conf.
MAIN_CONF = """\
pid @DIR@/nginx.pid;
error_log @DIR@/error.log notice;
events { worker_connections 256; }
http {
    log_format gateway '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log @DIR@/access.log gateway;
    client_body_temp_path @DIR@/temp/body;
    proxy_temp_path @DIR@/temp/proxy;
    fastcgi_temp_path @DIR@/temp/fastcgi;
    uwsgi_temp_path @DIR@/temp/uwsgi;
    scgi_temp_path @DIR@/temp/scgi;
    include @DIR@/conf.d/default.conf;
}
"""
# One process as the invoking user: as root, worker processes would drop to `nobody`, who
# cannot write request bodies into the temp paths under pytest's private tmp_path.
RUN_FLAGS = "daemon off; master_process off;"


# ------------------------------------------------------------------------------ rendering


_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")


def render(template: str, env: Mapping[str, str]) -> str:
    """envsubst with a variable list, as the image runs it: `$NAME` and `${NAME}` of the
    names in `env` are replaced, every other `$...` is left as it is."""
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env[name] if name in env else m.group(0)

    return _REFERENCE.sub(replace, template)


def template_variables() -> set[str]:
    return {m.group(1) for m in _REFERENCE.finditer(TEMPLATE.read_text()) if m.group(1)}


# ------------------------------------------------------------------------------ running nginx

def _nginx() -> str:
    return require_tool("nginx", also=("/usr/sbin/nginx", "/usr/local/sbin/nginx"))


@dataclass
class Gateway:
    """A running nginx with the rendered gateway configuration."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        return (self.directory / "access.log").read_text().splitlines()


def nginx_test(directory: Path, **overrides: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Render the template into directory/conf.d (defaults from gateway.env), write the main
    configuration and run `nginx -t` on it."""
    env = {**read_env_file(GATEWAY_ENV), **overrides}
    (directory / "conf.d").mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    (directory / "conf.d" / "default.conf").write_text(render(TEMPLATE.read_text(), env))
    conf = directory / "nginx.conf"
    conf.write_text(MAIN_CONF.replace("@DIR@", str(directory)))
    proc = subprocess.run([_nginx(), "-p", str(directory), "-c", str(conf), "-g", RUN_FLAGS, "-t"],
                          capture_output=True, text=True, timeout=30)
    return conf, proc


@contextlib.contextmanager
def running_gateway(directory: Path, **overrides: str) -> Iterator[Gateway]:
    """nginx on a free loopback port with the template rendered from gateway.env + overrides."""
    port = free_port()
    conf, check = nginx_test(directory, QSTACK_GATEWAY_PORT=str(port), **overrides)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr
    with (directory / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen([_nginx(), "-p", str(directory), "-c", str(conf), "-g", RUN_FLAGS],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    gateway = Gateway(port, directory, proc)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited ({proc.returncode}):\n{(directory / 'stderr.log').read_text()}"
                            f"{(directory / 'error.log').read_text()}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{gateway.url}/gateway-health", trust_env=False).status_code == 200
            return False

        wait_until(up, 10, what="nginx to answer")
        yield gateway
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False)


def raw_get(port: int, target: str) -> tuple[int, Any]:
    """A GET whose request target is sent exactly as given (httpx would normalize it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# ------------------------------------------------------------------------- static checks

def test_template_variables_are_the_env_files_and_documented():
    defaults = read_env_file(GATEWAY_ENV)
    names = template_variables()
    assert names == set(defaults), "template variables and gateway.env differ"
    assert all(n.startswith("QSTACK_GATEWAY_") for n in names), names
    # Only these upper-case names may follow a `$`: the image substitutes every variable of
    # its environment (PATH, HOSTNAME, NGINX_VERSION, ...), nginx's own are lower-case.
    bare = {m.group(2) for m in _REFERENCE.finditer(TEMPLATE.read_text()) if m.group(2)}
    assert {n for n in bare if not n.islower()} == set(), bare
    header = "\n".join(ln for ln in TEMPLATE.read_text().splitlines() if ln.startswith("#"))
    readme = README.read_text()
    for name in names:
        assert name in header and name in readme, f"{name} is not documented"
    assert TEMPLATE.name.endswith(".conf.template")


def test_defaults_are_the_specifications():
    env = read_env_file(GATEWAY_ENV)
    assert env["QSTACK_GATEWAY_PORT"] == "80"  # infra/prometheus scrapes nginx:80
    for service, port in (("REGISTRY", 8081), ("SCHEDULER", 8082), ("FAILOVER", 8083)):
        assert env[f"QSTACK_GATEWAY_{service}_SERVERS"] == SERVER.format(
            f"{service.lower()}:{port}")
    assert env["QSTACK_GATEWAY_ADMIN_ALLOW"] == (
        "allow 10.0.0.0/8; allow 172.16.0.0/12; allow 192.168.0.0/16;")
    text = re.sub(r"#.*", "", TEMPLATE.read_text())  # the directives, without comments
    assert text.count("least_conn;") == 3 and "deny all;" in text
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "non_idempotent" not in text  # a POST that went out is never sent again


def test_render_matches_envsubst():
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("envsubst not found (Debian's gettext-base)")
    env = {**read_env_file(GATEWAY_ENV), "HOSTNAME": "x"}
    names = " ".join(f"${{{name}}}" for name in env)
    out = subprocess.run([envsubst, names], input=TEMPLATE.read_text(), capture_output=True,
                         text=True, env={"PATH": os.environ.get("PATH", ""), **env}, check=True)
    assert out.stdout == render(TEMPLATE.read_text(), env)
    assert "$host" in out.stdout and "${" not in out.stdout


def test_nginx_accepts_the_defaults(tmp_path: Path):
    # The compose names resolve only inside compose: point them at loopback, keep the rest.
    env = read_env_file(GATEWAY_ENV)
    servers = {k: re.sub(r"\b(registry|scheduler|failover):", "127.0.0.1:", v)
               for k, v in env.items() if k.endswith("_SERVERS")}
    _, check = nginx_test(tmp_path, QSTACK_GATEWAY_PORT=str(free_port()), **servers)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr


# --------------------------------------------------------------- in front of a real stack

@pytest.fixture(scope="module")
def stack(start_stack):
    _nginx()  # skip before starting any service
    return start_stack(workers=1, schedulers=2, failover=True)


@pytest.fixture(scope="module")
def upstreams(stack) -> dict[str, str]:
    def servers(*names: str) -> str:
        return " ".join(SERVER.format(f"127.0.0.1:{stack.services[n].port}") for n in names)

    return {"QSTACK_GATEWAY_REGISTRY_SERVERS": servers("registry"),
            "QSTACK_GATEWAY_SCHEDULER_SERVERS": servers("scheduler", "scheduler-2"),
            "QSTACK_GATEWAY_FAILOVER_SERVERS": servers("failover")}


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory) -> Iterator[Gateway]:
    """The gateway with 127.0.0.0/8 added to the admin allow-list."""
    allow = OPEN + read_env_file(GATEWAY_ENV)["QSTACK_GATEWAY_ADMIN_ALLOW"]
    with running_gateway(tmp_path_factory.mktemp("gateway"), QSTACK_GATEWAY_ADMIN_ALLOW=allow,
                         **upstreams) as g:
        yield g


@pytest.fixture(scope="module")
def closed_gateway(upstreams, tmp_path_factory) -> Iterator[Gateway]:
    """The gateway with the default allow-list, which 127.0.0.1 is not on."""
    with running_gateway(tmp_path_factory.mktemp("closed"), **upstreams) as g:
        yield g


@pytest.fixture
def via(gateway, stack) -> Iterator[httpx.Client]:
    with client(gateway.url, stack.token) as c:
        yield c


def direct(stack, name: str) -> httpx.Client:
    return client(stack.services[name].url, stack.token)


OWNER_SERVICE = {"scheduler": "scheduler", "registry": "registry", "failover": "failover",
                 "each": "registry"}  # the gateway's /health is the registry's system health
# One request per documented operation: {job} is a real job, the others name nothing that
# exists, and bodies are invalid, so repeating a request changes nothing.
ROUTE_REQUESTS: dict[tuple[str, str], tuple[str, Any]] = {
    ("post", "/api/v1/jobs"): ("/api/v1/jobs", {}),
    ("post", "/api/v1/jobs/batch"): ("/api/v1/jobs/batch", {"jobs": []}),
    ("get", "/api/v1/jobs/{job_id}"): ("/api/v1/jobs/{job}", None),
    ("post", "/api/v1/jobs/{job_id}/cancel"): ("/api/v1/jobs/2000000000/cancel", None),
    ("post", "/api/v1/jobs/{job_id}/retry"): ("/api/v1/jobs/2000000000/retry", None),
    ("get", "/admin/queue/jobs"): ("/admin/queue/jobs?limit=1", None),
    ("post", "/admin/queue/jobs/retry"): ("/admin/queue/jobs/retry", {}),
    ("post", "/admin/queue/jobs/cancel"): ("/admin/queue/jobs/cancel", {}),
    ("get", "/admin/queue/stats"): ("/admin/queue/stats", None),
    ("get", "/admin/queue/throughput"): ("/admin/queue/throughput?seconds=1", None),
    ("get", "/api/v1/queues"): ("/api/v1/queues", None),
    ("post", "/api/v1/queues/{queue}/pause"): ("/api/v1/queues/bad%20name/pause", None),
    ("post", "/api/v1/queues/{queue}/resume"): ("/api/v1/queues/bad%20name/resume", None),
    ("post", "/api/v1/locks/{key}"): ("/api/v1/locks/{key}", {}),
    ("post", "/api/v1/locks/{key}/renew"): ("/api/v1/locks/{key}/renew", {}),
    ("post", "/api/v1/locks/{key}/release"): ("/api/v1/locks/{key}/release", {}),
    ("get", "/api/v1/locks/{key}"): ("/api/v1/locks/{key}", None),
    ("get", "/admin/queue/locks"): ("/admin/queue/locks", None),
    ("post", "/admin/queue/locks/clear-stale"): ("/admin/queue/locks/clear-stale", None),
    ("post", "/api/v1/workers"): ("/api/v1/workers", {}),
    ("get", "/api/v1/workers"): ("/api/v1/workers", None),
    ("get", "/admin/queue/workers"): ("/admin/queue/workers?status=active", None),
    ("get", "/admin/queue/workers/validate"):
        ("/admin/queue/workers/validate?max_clock_skew_ms=-1", None),
    ("get", "/admin/queue/workers/resources"): ("/admin/queue/workers/resources?seconds=60", None),
    ("get", "/admin/queue/workers/config"): ("/admin/queue/workers/config?all=true", None),
    ("get", "/api/v1/workers/stats"): ("/api/v1/workers/stats", None),
    ("get", "/api/v1/workers/{worker_id}"): ("/api/v1/workers/{worker}", None),
    ("post", "/api/v1/workers/{worker_id}/heartbeat"): ("/api/v1/workers/{worker}/heartbeat", {}),
    ("post", "/api/v1/workers/{worker_id}/drain"): ("/api/v1/workers/{worker}/drain", None),
    ("post", "/api/v1/workers/{worker_id}/stop"): ("/api/v1/workers/{worker}/stop", None),
    ("delete", "/api/v1/workers/{worker_id}"): ("/api/v1/workers/{worker}", None),
    ("get", "/admin/queue/failover"): ("/admin/queue/failover?limit=5", None),
    # force must be a boolean: a 400 rather than a forced failover pass
    ("post", "/admin/queue/failover/recover"): ("/admin/queue/failover/recover", {"force": 1}),
    ("post", "/admin/queue/failover/cleanup-crashed"):
        ("/admin/queue/failover/cleanup-crashed", None),
    # retention: each body is rejected (no days, negative days, an unknown field, a status
    # that is not final), so nothing is deleted
    ("post", "/admin/queue/failover/cleanup/health-checks"):
        ("/admin/queue/failover/cleanup/health-checks", {}),
    ("post", "/admin/queue/failover/cleanup/failover-events"):
        ("/admin/queue/failover/cleanup/failover-events", {"days": -1}),
    ("post", "/admin/queue/failover/cleanup/orphaned-assignments"):
        ("/admin/queue/failover/cleanup/orphaned-assignments", {"unknown": 1}),
    ("post", "/admin/queue/failover/cleanup/jobs"):
        ("/admin/queue/failover/cleanup/jobs", {"days": 1, "statuses": ["running"]}),
    ("get", "/admin/queue/failover/retention"): ("/admin/queue/failover/retention", None),
    ("post", "/admin/queue/failover/retention/run"):
        ("/admin/queue/failover/retention/run", {"unknown": 1}),
    ("get", "/health"): ("/health", None),
}


def shape(resp: httpx.Response) -> tuple[int, Any]:
    """Status and error body, or status and the keys of a success body (whose values move)."""
    body = resp.json()
    return resp.status_code, (body if resp.status_code >= 400 else sorted(body))


@pytest.mark.e2e
def test_every_documented_route_reaches_its_owner(stack, via):
    assert {(op.method, op.path) for op in OPERATIONS} == set(ROUTE_REQUESTS)
    with direct(stack, "scheduler") as s:
        job = s.post("/api/v1/jobs", json={"task": "noop"}).json()["id"]
    values = {"job": job, "key": quote("gateway/route key", safe=""), "worker": "no-such-worker"}
    for op in OPERATIONS:
        path, body = ROUTE_REQUESTS[(op.method, op.path)]
        path = path.format(**values)
        with direct(stack, OWNER_SERVICE[op.owner]) as owner:
            expected = shape(owner.request(op.method, path, json=body))
        got = shape(via.request(op.method, path, json=body))
        assert got == expected, f"{op.method} {path}"
        status, answer = got
        # the owner served the route itself: not aiohttp's "no such route" 404
        assert not (status == 404 and answer["error"]["message"].startswith("Not Found:")), path


@pytest.mark.e2e
def test_design_prefixes_without_documented_routes(stack, via):
    """DESIGN.md's prefixes reach their owner even where it has no route yet."""
    for path, owner in (("/api/v1/services", "registry"),):
        with direct(stack, owner) as c:
            expected = c.get(path)
        assert expected.status_code == 404
        assert via.get(path).json() == expected.json()
    resp = via.get("/admin/metrics")
    assert resp.status_code == 200 and "queue_length" in resp.text
    assert resp.headers["content-type"].startswith("text/plain")


@pytest.mark.e2e
def test_enqueue_through_the_gateway(stack, via):
    resp = via.post("/api/v1/jobs", json={"task": "noop", "payload": {"via": "gateway"}})
    assert resp.status_code == 201, resp.text
    with direct(stack, "scheduler") as s:
        job = s.get(f"/api/v1/jobs/{resp.json()['id']}")
    assert job.status_code == 200 and job.json()["payload"] == {"via": "gateway"}


@pytest.mark.e2e
def test_worker_list_and_failover_events_are_the_owners(stack, via):
    def workers(c: httpx.Client) -> list[tuple[str, str, int]]:  # without the moving figures
        return [(w["id"], w["status"], w["pid"]) for w in c.get("/api/v1/workers").json()["workers"]]

    with direct(stack, "registry") as r:
        assert workers(via) == workers(r)
    assert len(workers(via)) == 1
    with direct(stack, "failover") as f:
        assert via.get("/admin/queue/failover").json() == f.get("/admin/queue/failover").json()
    recovered = via.post("/admin/queue/failover/recover", json={})
    assert recovered.status_code == 200 and "declared_dead" in recovered.json()


@pytest.mark.e2e
def test_lock_key_stays_encoded(stack, via):
    key = "gateway/a b"  # a slash and a space, percent-encoded in the path
    path = f"/api/v1/locks/{quote(key, safe='')}"
    took = via.post(path, json={"owner": "gw", "ttl_ms": 30_000})
    assert took.status_code == 200 and took.json()["key"] == key, took.text
    with direct(stack, "scheduler") as s:
        assert s.get(path).json()["owner"] == "gw"
    assert via.post(f"{path}/release", json={"owner": "gw", "token": took.json()["token"]}) \
        .status_code == 200


@pytest.mark.e2e
def test_health_is_the_systems_and_not_logged(stack, gateway, via):
    with direct(stack, "registry") as r:
        expected = r.get("/health")
    got = via.get("/health")
    assert got.status_code == expected.status_code
    assert got.json()["service"] == "registry" and set(got.json()["checks"]) == set(
        expected.json()["checks"]) >= {"database", "dispatcher_leader", "failover_leader"}
    via.get("/api/v1/workers")
    log = gateway.access_log()
    assert any('"GET /api/v1/workers HTTP/1.1" 200' in line for line in log), log
    assert not [line for line in log if '"GET /health ' in line], log


@pytest.mark.e2e
def test_token_passes_through(stack, gateway):
    with client(gateway.url) as anonymous:
        resp = anonymous.get("/api/v1/workers")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    with client(gateway.url, "wrong") as wrong:
        assert wrong.get("/admin/queue/stats").json()["error"]["message"] == "wrong bearer token"
    with client(gateway.url, stack.token) as good:
        assert good.get("/api/v1/workers").status_code == 200
        assert good.get("/admin/queue/stats").status_code == 200


NOT_FOUND = {"error": {"code": "not_found", "message": "Not Found: no qstack route for this path"}}


@pytest.mark.e2e
def test_unknown_paths_are_json_404s(gateway, via):
    for method, path in (("GET", "/"), ("GET", "/nope"), ("POST", "/api/v2/jobs"),
                         ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                         ("GET", "/admin/nope"), ("DELETE", "/admin/queue"), ("GET", "/admin")):
        resp = via.request(method, path)
        assert resp.status_code == 404, f"{method} {path}"
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == NOT_FOUND
    assert httpx.get(f"{gateway.url}/gateway-health", trust_env=False).json()["status"] == "ok"


@pytest.mark.e2e
def test_admin_only_for_the_allow_list(stack, closed_gateway):
    with client(closed_gateway.url, stack.token) as c:
        for path in ("/admin/queue/stats", "/admin/queue/failover", "/admin/metrics",
                     "/admin/queue/workers", "/admin/nope"):
            resp = c.get(path)
            assert resp.status_code == 403, path
            assert resp.json()["error"]["code"] == "forbidden"
        assert c.post("/admin/queue/failover/recover", json={}).status_code == 403
        assert c.get("/api/v1/workers").status_code == 200
        assert c.post("/api/v1/jobs", json={"task": "noop"}).status_code == 201
        assert c.get("/health").json()["service"] == "registry"
    # dot segments, encoded or not, are resolved before the location is chosen
    for target in ("/api/v1/jobs/%2e%2e/%2e%2e/%2e%2e/admin/queue/stats",
                   "/api/v1/jobs/..%2F..%2F..%2Fadmin/queue/stats", "/%61dmin/queue/stats"):
        status, body = raw_get(closed_gateway.port, target)
        assert status == 403, target
        assert body["error"]["code"] == "forbidden"


@pytest.mark.e2e
def test_body_limit(via):
    jobs = [{"task": "noop", "payload": "x" * 900_000} for _ in range(3)]
    resp = via.post("/api/v1/jobs/batch", json={"jobs": jobs})  # ~2.7 MB: over nginx's 1m
    assert resp.status_code == 201, resp.text
    limit = read_env_file(GATEWAY_ENV)["QSTACK_GATEWAY_MAX_BODY"]
    assert limit == "16m"
    resp = via.post("/api/v1/jobs/batch", content=b"x" * (17 * 1024 * 1024),
                    headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large" and limit in resp.text


# ------------------------------------------------- in front of servers that show the request

class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what arrived: method, request target, headers."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"method": self.command, "target": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


def only(port: int) -> dict[str, str]:
    """Every upstream pointed at one loopback port."""
    return {f"QSTACK_GATEWAY_{s}_SERVERS": SERVER.format(f"127.0.0.1:{port}")
            for s in ("REGISTRY", "SCHEDULER", "FAILOVER")}


@pytest.fixture
def echo() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hang_up() -> Iterator[tuple[int, list[int]]]:
    """A server that reads a request and closes the connection without an answer."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    hits: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                hits.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], hits
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_forwarded_headers_and_raw_target(echo, tmp_path):
    with running_gateway(tmp_path, **only(echo)) as g, client(g.url) as c:
        seen = c.get("/api/v1/locks/a%2Fb%20c?x=1", headers={
            "Authorization": "Bearer  odd token=", "X-Forwarded-For": "203.0.113.7"}).json()
        assert seen["method"] == "GET" and seen["target"] == "/api/v1/locks/a%2Fb%20c?x=1"
        headers = seen["headers"]
        assert headers["authorization"] == "Bearer  odd token="
        assert headers["host"] == "127.0.0.1"
        assert headers["x-real-ip"] == "127.0.0.1"
        assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert c.delete("/api/v1/workers/w1").json()["method"] == "DELETE"
        assert c.post("/api/v1/jobs", json={}).json()["headers"]["content-length"] == "2"


def test_only_requests_not_sent_are_retried_for_post(echo, hang_up, tmp_path):
    """A replica that hangs up after reading the request: nginx sends a GET on to the next
    replica, but answers a POST with 502 (it may have been acted on). With no replica to
    connect to at all, the 502 is nginx's own, in the services' error shape."""
    port, hits = hang_up
    both = f"{SERVER.format(f'127.0.0.1:{port}')} {SERVER.format(f'127.0.0.1:{echo}')}"
    nobody = SERVER.format(f"127.0.0.1:{free_port()}")  # nothing listens there
    upstreams = {**only(echo), "QSTACK_GATEWAY_SCHEDULER_SERVERS": both,
                 "QSTACK_GATEWAY_REGISTRY_SERVERS": nobody}
    with running_gateway(tmp_path, **upstreams) as g, client(g.url) as c:
        outcomes: dict[str, tuple[int, str | None]] = {}
        for method in ("POST", "GET"):
            # round robin alternates the two; stop at the first request that reached the
            # hang-up one (two failures in all, below max_fails=3)
            for _ in range(4):
                before = len(hits)
                resp = c.request(method, "/api/v1/jobs", json={} if method == "POST" else None)
                if len(hits) > before:
                    outcomes[method] = (resp.status_code, resp.json().get("error", {}).get("code"))
                    break
        assert outcomes == {"POST": (502, "bad_gateway"), "GET": (200, None)}, outcomes
        resp = c.get("/api/v1/workers")
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "bad_gateway"


# ------------------------------------------- a dead replica (last: it kills scheduler-2)

@pytest.mark.e2e
def test_dead_scheduler_replica_is_skipped(stack, gateway, via):
    ports = {stack.services[n].port for n in ("scheduler", "scheduler-2")}
    before = len(gateway.access_log())
    for _ in range(6):
        assert via.get("/admin/queue/stats").status_code == 200
    used = {int(p) for line in gateway.access_log()[before:]
            for p in re.findall(r"127\.0\.0\.1:(\d+)", line.split("upstream=")[1])}
    assert used == ports, "least_conn should spread requests over both replicas"

    dead = stack.services["scheduler-2"].port
    stack.kill("scheduler-2")
    before = len(gateway.access_log())
    ids = []
    for i in range(10):
        resp = via.post("/api/v1/jobs", json={"task": "noop", "payload": i})
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["id"])
    for _ in range(10):
        assert via.get("/admin/queue/stats").status_code == 200
    with direct(stack, "scheduler") as s:
        assert all(s.get(f"/api/v1/jobs/{i}").status_code == 200 for i in ids)
    log = gateway.access_log()[before:]
    retried = [line for line in log if f":{dead}, 127.0.0.1:" in line]
    assert any('"POST /api/v1/jobs' in line for line in retried), log  # refused, so resent
    assert len(retried) == 3, log  # max_fails=3, then it is left out for fail_timeout=30s
    assert all(not line.rstrip().endswith(f":{dead}") for line in log), log
