"""Entry point: `qregistry` (settings from the environment)."""

from __future__ import annotations

from qregistry.app import create_app
from qshared.http import service_main


def main() -> None:
    service_main("qregistry", create_app)


if __name__ == "__main__":
    main()
