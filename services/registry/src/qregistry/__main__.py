"""Entry point: `qregistry` (settings from the environment)."""

from __future__ import annotations

import sys

from qregistry.app import create_app
from qshared.config import load_settings
from qshared.errors import ConfigError
from qshared.http import run, serve, setup_logging


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"qregistry: {exc}")
    setup_logging(settings.log_level)
    run(lambda: serve(create_app(settings), settings.qstack_host, settings.qstack_port))


if __name__ == "__main__":
    main()
