"""Loads the named SQL queries of one dialect from its `.sql` file."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*--\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a dialect file into {name: sql}; a repeated name is an error."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def load_queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect ('postgres' or 'mysql')."""
    text = resources.files("qshared.storage").joinpath(f"sql/{dialect}.sql").read_text()
    return parse_queries(text)
