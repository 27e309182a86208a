"""kubectl-like contexts: named stacks (URLs and token) stored in the user's config dir.

Shared by qctl (which writes them) and qtui (which reads them).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qshared.errors import ConfigError, NotFound

DEFAULT_SCHEDULER_URL = "http://127.0.0.1:8082"
DEFAULT_REGISTRY_URL = "http://127.0.0.1:8081"
DEFAULT_FAILOVER_URL = "http://127.0.0.1:8083"
LOCAL_CONTEXT = "local"
_FILE_NAME = "contexts.json"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """QSTACK_CONFIG_DIR, else $XDG_CONFIG_HOME/qstack, else ~/.config/qstack."""
    env = os.environ if env is None else env
    if env.get("QSTACK_CONFIG_DIR"):
        return Path(env["QSTACK_CONFIG_DIR"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "qstack"


@dataclass
class Context:
    """One named stack: where its scheduler, registry and failover watcher answer, its token."""

    name: str
    scheduler_url: str | None = None
    registry_url: str | None = None
    token: str | None = None
    gateway_url: str | None = None
    failover_url: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Context:
        """A context from its stored form; fields an older qctl did not write stay unset."""
        known = {k: data.get(k) for k in (
            "scheduler_url", "registry_url", "token", "gateway_url", "failover_url")}
        return cls(name=str(data["name"]), **known)  # type: ignore[arg-type]


@dataclass
class Target:
    """The resolved endpoints and token a remote command talks to."""

    scheduler_url: str
    registry_url: str
    token: str | None
    context: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    failover_url: str = DEFAULT_FAILOVER_URL


class ContextStore:
    """The contexts file: a list of contexts and the name of the current one."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / _FILE_NAME
        self.current: str | None = None
        self.contexts: dict[str, Context] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text() or "{}")
            self.current = data.get("current")
            for item in data.get("contexts", []):
                ctx = Context.from_dict(item)
                self.contexts[ctx.name] = ctx
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot read contexts file {self.path}: {exc}") from None

    def save(self) -> None:
        """Write atomically, readable by the owner only (it holds tokens)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "current": self.current,
            "contexts": [asdict(c) for c in sorted(self.contexts.values(), key=lambda c: c.name)],
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".contexts-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
                fh.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, name: str) -> Context:
        """The named context; raises NotFound."""
        try:
            return self.contexts[name]
        except KeyError:
            raise NotFound(f"no context named {name!r} (see `qctl context list`)") from None

    def current_context(self) -> Context | None:
        """The current context, or None when none is set (or it was removed)."""
        return self.contexts.get(self.current) if self.current else None

    def put(self, ctx: Context, *, make_current: bool = False) -> None:
        """Add or replace a context and save; the first context becomes current."""
        self.contexts[ctx.name] = ctx
        if make_current or self.current not in self.contexts:
            self.current = ctx.name
        self.save()

    def use(self, name: str) -> Context:
        """Make a context current and save."""
        ctx = self.get(name)
        self.current = name
        self.save()
        return ctx

    def remove(self, name: str) -> None:
        """Delete a context and save; removing the current one leaves none current."""
        self.get(name)
        del self.contexts[name]
        if self.current == name:
            self.current = None
        self.save()


def resolve(
    *,
    scheduler_url: str | None = None,
    registry_url: str | None = None,
    token: str | None = None,
    context: str | None = None,
    failover_url: str | None = None,
    env: Mapping[str, str] | None = None,
    store: ContextStore | None = None,
) -> Target:
    """Options, then QSTACK_* environment, then the current context, then defaults.

    A context named explicitly (`--context`) is an option too, so it ranks above the
    environment.
    """
    env = os.environ if env is None else env
    if store is None:
        store = ContextStore(config_dir(env) / _FILE_NAME)
    ctx = store.get(context) if context else store.current_context()
    target = Target("", "", None, ctx.name if ctx else None)
    ctx_values = {
        "scheduler_url": (ctx.scheduler_url or ctx.gateway_url) if ctx else None,
        "registry_url": (ctx.registry_url or ctx.gateway_url) if ctx else None,
        "failover_url": (ctx.failover_url or ctx.gateway_url) if ctx else None,
        "token": ctx.token if ctx else None,
    }
    defaults = {
        "scheduler_url": DEFAULT_SCHEDULER_URL, "registry_url": DEFAULT_REGISTRY_URL,
        "failover_url": DEFAULT_FAILOVER_URL, "token": None,
    }
    options = {"scheduler_url": scheduler_url, "registry_url": registry_url,
               "failover_url": failover_url, "token": token}
    for key in ("scheduler_url", "registry_url", "failover_url", "token"):
        env_name = f"QSTACK_{key.upper()}"
        order = [
            ("option", options[key]), (env_name, env.get(env_name)),
            (f"context {target.context}", ctx_values[key]), ("default", defaults[key]),
        ]
        if context:
            order[1], order[2] = order[2], order[1]
        for source, value in order:
            if value:
                setattr(target, key, value.rstrip("/") if key.endswith("_url") else value)
                target.sources[key] = source
                break
    return target
