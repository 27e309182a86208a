"""Named SQL queries: the parser, and that each backend's code and dialect file agree."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from qshared.storage.queries import load_queries, parse_queries

STORAGE = Path(str(resources.files("qshared.storage")))
DIALECTS = ("postgres", "mysql")


def used_names(dialect: str) -> set[str]:
    """The query names a backend module looks up with self._q["..."]."""
    source = (STORAGE / f"{dialect}.py").read_text()
    return set(re.findall(r"""self\._q\[\s*["']([a-z_][a-z0-9_]*)["']\s*\]""", source))


def test_parse_splits_named_blocks_and_drops_comment_lines() -> None:
    text = """-- file header, not a query

-- name: first --
-- a comment about the first query
SELECT 1
FROM t -- a trailing comment stays
WHERE x = $1

--name: second_one--
UPDATE t SET y = 2
"""
    assert parse_queries(text) == {
        "first": "SELECT 1\nFROM t -- a trailing comment stays\nWHERE x = $1",
        "second_one": "UPDATE t SET y = 2",
    }


def test_parse_rejects_a_name_defined_twice() -> None:
    text = "-- name: q --\nSELECT 1\n-- name: other --\nSELECT 2\n-- name: q --\nSELECT 3\n"
    with pytest.raises(ValueError, match="'q'"):
        parse_queries(text)


def test_parse_of_a_file_without_names_is_empty() -> None:
    assert parse_queries("-- nothing here\n") == {}


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if (STORAGE / f"{d}.py").exists()])
def test_every_query_a_backend_uses_is_defined(dialect: str) -> None:
    used = used_names(dialect)
    assert used, f"found no self._q[...] lookups in {dialect}.py"
    defined = load_queries(dialect)
    assert sorted(used - set(defined)) == []
    assert all(defined[name].strip() for name in used), "an empty query body"


def test_the_postgres_dialect_is_complete() -> None:
    # the names the reference backend is known to need; guards the grep above
    assert {"enqueue", "pick_pending", "assign", "claim_assigned", "report",
            "acquire_lock"} <= used_names("postgres")
