"""The backup format without a database: value encodings and the reader's checks."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from qshared.backup import (
    FORMAT,
    VERSION,
    BackupError,
    BackupReader,
    BackupWriter,
    decode_value,
    encode_value,
)


def line(kind: str, value: Any) -> Any:
    """What a value becomes in a backup line, read back as JSON."""
    return orjson.loads(orjson.dumps([encode_value(kind, value)]))[0]


@pytest.mark.parametrize("kind, value", [
    ("int", 2**62), ("int", -1), ("float", 0.1), ("float", -2.5e-300), ("bool", True),
    ("text", "naïve ☃ \x01 \"q\""), ("bytes", bytes(range(256))),
    ("timestamp", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
    ("timestamp", datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))),
    ("json", '{"a": [1, 2.5, null, "x"]}'), ("json", "null"), ("json", '"text"'),
    ("json", '{"$json": 1}'), ("json", '{"$json": null}'), ("json", '{"$json": 1, "b": 2}'),
    ("json", "[]"), ("int", None), ("json", None), ("timestamp", None),
])
def test_values_survive_a_line(kind: str, value: Any) -> None:
    back = decode_value(kind, line(kind, value))
    if kind == "json" and value is not None:
        assert json.loads(back) == json.loads(value)
    else:
        assert back == value
        assert type(back) is type(value)


def test_json_null_and_sql_null_stay_apart() -> None:
    assert line("json", None) is None
    assert line("json", "null") == {"$json": None}
    assert decode_value("json", None) is None
    assert decode_value("json", {"$json": None}) == "null"
    assert line("json", '{"$json": 1}') == {"$json": {"$json": 1}}
    assert line("json", '{"$json": 1, "b": 2}') == {"$json": 1, "b": 2}  # not ambiguous


def test_special_floats_and_timestamps_are_spelled_portably() -> None:
    assert [line("float", v) for v in (math.inf, -math.inf)] == ["Infinity", "-Infinity"]
    assert math.isnan(decode_value("float", line("float", math.nan)))
    assert decode_value("float", 3) == 3.0 and isinstance(decode_value("float", 3), float)
    naive = datetime(2024, 5, 1, 10, 0)
    assert line("timestamp", naive) == "2024-05-01T10:00:00+00:00"
    assert decode_value("bool", 1) is True  # a backend that keeps booleans as integers


@pytest.mark.parametrize("kind, value", [
    ("int", "1"), ("int", 1.5), ("text", 5), ("bool", 2), ("float", "fast"),
    ("timestamp", "yesterday"), ("timestamp", "2024-01-01T00:00:00"), ("bytes", "***"),
    ("bytes", 5), ("uuid", "x"),
])
def test_a_value_that_does_not_fit_is_a_backup_error(kind: str, value: Any) -> None:
    with pytest.raises(BackupError):
        decode_value(kind, value)


# -- the reader ---------------------------------------------------------------------------
def header(**changes: Any) -> dict[str, Any]:
    head = {"format": FORMAT, "version": VERSION, "backend": "postgres",
            "taken_at": "2024-01-01T00:00:00+00:00", "schema": [{"version": 1, "name": "0001"}],
            "tables": {"jobs": 2, "queue_settings": 0}, "sequences": {"jobs.id": 2}}
    head.update(changes)
    return head


def backup(*lines: Any) -> io.BytesIO:
    return io.BytesIO(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))


JOBS = {"table": "jobs", "columns": ["id", "payload"], "types": ["int", "json"]}
SETTINGS = {"table": "queue_settings", "columns": ["queue_name"], "types": ["text"]}


def read(*lines: Any) -> list[Any]:
    return list(BackupReader(backup(*lines), "f.qsb").records())


def test_a_good_file_reads_back() -> None:
    records = read(header(), JOBS, [1, {"a": 1}], [2, None], SETTINGS)
    assert records == [header(), JOBS, [1, {"a": 1}], [2, None], SETTINGS]


@pytest.mark.parametrize("lines, message", [
    ((), "f.qsb: the file is empty"),
    (({"format": "other"},), "line 1: not a qstack backup"),
    ((header(version=2),), "line 1: format version 2: this qctl reads version 1"),
    ((header(tables={"jobs": -1}),), "line 1: the header's tables is missing or malformed"),
    ((header(schema=None, sequences=[]),), "line 1: the header's schema, sequences is missing"),
    ((header(tables={"nope": 1}),), "line 1: unknown table"),
    ((header(), [1, 2]), "line 2: a row before any table line"),
    ((header(), JOBS, [1]), "line 3: table jobs: a row of 1 values, 2 columns"),
    ((header(), JOBS, [1, 2], [2, 3], JOBS), "line 5: table jobs appears twice"),
    ((header(), {**JOBS, "types": ["int", "money"]}), "line 2: table jobs: bad columns or types"),
    ((header(), {**JOBS, "table": "queue_workers"}), "line 2: table 'queue_workers' is not in"),
    ((header(), JOBS, [1, 2], SETTINGS), "line 4: table jobs has 1 rows, the header says 2"),
    ((header(), JOBS, [1, 2], [2, 3]), "line 4: the file ends before table(s) queue_settings"),
    ((header(), JOBS, [1, 2], [2, 3], SETTINGS, "x"), "line 6: expected a table line or a row"),
])
def test_a_bad_file_names_itself_and_the_line(lines: tuple[Any, ...], message: str) -> None:
    with pytest.raises(BackupError) as caught:
        read(*lines)
    assert str(caught.value).startswith("f.qsb: ")
    assert message in str(caught.value)


def test_a_truncated_stream_and_a_non_gzip_file_are_backup_errors() -> None:
    data = backup(header(), JOBS, *([i, {"pad": "x" * 50}] for i in range(2000))).getvalue()
    with pytest.raises(BackupError, match=r"f.qsb: line \d+: the (file|line) is cut short"):
        list(BackupReader(io.BytesIO(data[: len(data) // 2]), "f.qsb").records())
    with pytest.raises(BackupError, match="not gzip-compressed"):
        BackupReader(io.BytesIO(b'{"format": "qstack-backup"}\n'), "f.qsb")


def test_the_writer_turns_export_records_into_the_format() -> None:
    out = io.BytesIO()
    writer = BackupWriter(out, "postgres")
    taken = datetime(2024, 1, 1, tzinfo=UTC)

    async def export() -> None:
        await writer({"taken_at": taken, "schema": [{"version": 1, "name": "0001"}],
                      "tables": {"jobs": 1}, "sequences": {"jobs.id": 7}})
        await writer(JOBS)
        await writer([7, '{"$json": null}'])

    asyncio.run(export())
    size = writer.close()
    assert size == len(out.getvalue())
    lines = [json.loads(x) for x in gzip.decompress(out.getvalue()).splitlines()]
    assert lines[0] == {"format": FORMAT, "version": VERSION, "backend": "postgres",
                        "taken_at": "2024-01-01T00:00:00+00:00",
                        "schema": [{"version": 1, "name": "0001"}], "tables": {"jobs": 1},
                        "sequences": {"jobs.id": 7}}
    assert lines[1:] == [JOBS, [7, {"$json": {"$json": None}}]]
