"""kubectl-like contexts, re-exported from qshared (qtui reads them too, without qctl)."""

from qshared.contexts import (
    DEFAULT_FAILOVER_URL,
    DEFAULT_REGISTRY_URL,
    DEFAULT_SCHEDULER_URL,
    LOCAL_CONTEXT,
    Context,
    ContextStore,
    Target,
    config_dir,
    resolve,
)

__all__ = [
    "DEFAULT_FAILOVER_URL",
    "DEFAULT_REGISTRY_URL",
    "DEFAULT_SCHEDULER_URL",
    "LOCAL_CONTEXT",
    "Context",
    "ContextStore",
    "Target",
    "config_dir",
    "resolve",
]
