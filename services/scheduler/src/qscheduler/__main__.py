"""Entry point: `qscheduler` (settings from the environment)."""

from __future__ import annotations

from qscheduler.app import create_app
from qshared.http import service_main


def main() -> None:
    service_main("qscheduler", create_app)


if __name__ == "__main__":
    main()
