"""What the SQL backends share beside their query files: migration files, statement
splitting, and one outcome per assignment in a report batch.

Both backends import them from here, so that neither imports the other's driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from importlib import resources

from qshared.storage.base import Outcome


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """The (version, name, sql) of every migration of a dialect, in order."""
    folder = resources.files("qshared").joinpath(f"migrations/{dialect}")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name.removesuffix(".sql"), entry.read_text()))
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file, split at a `;` that ends a line.

    Comment lines go; a statement that spans lines stays whole. Enough for qstack's own
    migrations (no procedures, no `;` at a line's end inside a string).
    """
    statements, current = [], []
    for line in sql.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().removesuffix(";").strip()
            if statement:
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


def latest_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """One outcome per assignment (job and token), the latest; it keeps an earlier start time.

    A batch may name one assignment twice (a start, then its end); applying only the latest
    keeps the result independent of the order the database applies them in (PostgreSQL's
    UPDATE ... FROM would apply an arbitrary one of several rows matching a job).
    """
    latest: dict[tuple[int, int], Outcome] = {}
    for o in outcomes:
        prev = latest.get((o.id, o.token))
        if prev is not None and o.started is None:
            o = dataclasses.replace(o, started=prev.started)
        latest[(o.id, o.token)] = o
    return list(latest.values())
