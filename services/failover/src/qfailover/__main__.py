"""Entry point: `qfailover` (settings from the environment)."""

from __future__ import annotations

from qfailover.app import create_app
from qshared.http import service_main


def main() -> None:
    service_main("qfailover", create_app)


if __name__ == "__main__":
    main()
