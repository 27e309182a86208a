"""Places set up the way infra/db/README.md says: the grant file with its placeholders filled
in, the migrations run as the owner, the services' URL for the runtime user; and what that
user may do there, as the server sees it.

The two users get a suffix of their own (`qstack_app_1a2b3c4d`): users and roles are
server-wide, and other runs use the same servers at the same time.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from backends import PROBE_TIMEOUT, mysql_params, place_name, run_sync

from qshared.storage import open_storage
from qshared.storage.sql_shared import split_statements

INFRA_DB = Path(__file__).resolve().parents[1] / "infra" / "db"
GRANT_FILES = {"postgres": INFRA_DB / "postgres-grants.sql",
               "mysql": INFRA_DB / "mysql-grants.sql"}
USERS = ("qstack_owner", "qstack_app")  # the names the files use
MYSQL_PART_2 = "-- == part 2"  # the line that starts the MySQL file's after-migration part
CLIENT_HOST = "%"  # the test servers see the client as 127.0.0.1, a container's gateway...
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# PostgreSQL: a grant on the database and a DROP OWNED both rewrite the database's row of
# pg_database, and two at once fail with "tuple concurrently updated" (two test processes
# setting up places): they take this advisory lock first, one at a time.
PG_ROLES_LOCK = 0x7173_7461_636B  # "qstack"


@dataclass(slots=True)
class GrantedPlace:
    """A schema (PostgreSQL) or database (MySQL) with qstack's owner and runtime users."""

    backend: str
    server_url: str  # the administrative DSN the place was made with
    name: str  # the schema or database
    owner: str
    app: str
    owner_url: str = ""
    app_url: str = ""
    applied: list[str] = field(default_factory=list)  # the migrations the owner ran


def render(text: str, users: dict[str, str], **values: str) -> str:
    """The grant file with its placeholders filled in and its users renamed.

    Raises:
        AssertionError: a placeholder is left (the file has one the test does not know).
    """
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    assert not left, f"placeholders left unfilled: {left}"
    for default, actual in users.items():
        text = re.sub(rf"\b{default}\b", actual, text)
    return text


def with_login(url: str, user: str, password: str, database: str | None = None) -> str:
    """The server URL logging in as `user` (and naming `database`, when given)."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    path = parts.path if database is None else "/" + database
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@contextlib.asynccontextmanager
async def granted_place(backend: str, server_url: str) -> AsyncIterator[GrantedPlace]:
    """A granted, migrated place: dropped with its users after, also when setting it up
    failed half-way."""
    place = new_place(backend, server_url)
    try:
        await set_up(place)
        yield place
    finally:
        await tear_down(place)


@contextlib.contextmanager
def held_granted_place(backend: str, server_url: str) -> Iterator[GrantedPlace]:
    """granted_place from sync code (module fixtures)."""
    place = new_place(backend, server_url)
    try:
        run_sync(set_up(place))
        yield place
    finally:
        run_sync(tear_down(place))


def new_place(backend: str, server_url: str) -> GrantedPlace:
    suffix = secrets.token_hex(4)
    return GrantedPlace(backend, server_url, place_name(),
                        owner=f"qstack_owner_{suffix}", app=f"qstack_app_{suffix}")


async def set_up(place: GrantedPlace) -> None:
    """Grant, migrate as the owner; fills in the place's URLs and `applied`."""
    passwords = {u: secrets.token_urlsafe(12) for u in (place.owner, place.app)}
    users = dict(zip(USERS, (place.owner, place.app), strict=True))
    text = GRANT_FILES[place.backend].read_text()
    values = {"OWNER_PASSWORD": passwords[place.owner], "APP_PASSWORD": passwords[place.app]}
    if place.backend == "postgres":
        import asyncpg

        admin = await asyncpg.connect(place.server_url, timeout=PROBE_TIMEOUT)
        try:
            await admin.execute(f"SELECT pg_advisory_lock({PG_ROLES_LOCK})")  # freed at close
            database = await admin.fetchval("SELECT current_database()")
            # the whole file in one simple-protocol round trip, as psql -f would run it
            await admin.execute(render(text, users, DATABASE=database, SCHEMA=place.name,
                                       **values))
        finally:
            await admin.close()
        # no search_path in the URLs: the roles' own setting (from the file) finds the schema
        place.owner_url = with_login(place.server_url, place.owner, passwords[place.owner])
        place.app_url = with_login(place.server_url, place.app, passwords[place.app])
        await _migrate(place)
        return
    first, marker, second = render(text, users, DATABASE=place.name, CLIENT_HOST=CLIENT_HOST,
                                   **values).partition(MYSQL_PART_2)
    assert marker, f"{GRANT_FILES['mysql'].name} has no '{MYSQL_PART_2}' line"
    await mysql_admin(place.server_url, split_statements(first))
    place.owner_url = with_login(place.server_url, place.owner, passwords[place.owner],
                                 place.name)
    place.app_url = with_login(place.server_url, place.app, passwords[place.app], place.name)
    await _migrate(place)
    await mysql_admin(place.server_url, split_statements(marker + second))


async def tear_down(place: GrantedPlace) -> None:
    """Drop the place and both users (whatever of them exists)."""
    if place.backend == "postgres":
        import asyncpg

        admin = await asyncpg.connect(place.server_url, timeout=PROBE_TIMEOUT)
        try:
            await admin.execute("SET lock_timeout = '20s'")
            await admin.execute(f"SELECT pg_advisory_lock({PG_ROLES_LOCK})")  # freed at close
            await admin.execute(f'DROP SCHEMA IF EXISTS "{place.name}" CASCADE')
            for role in (place.app, place.owner):
                if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                    # its grants and default privileges go first, then the role
                    await admin.execute(f'DROP OWNED BY "{role}"')
                    await admin.execute(f'DROP ROLE "{role}"')
        finally:
            await admin.close()
        return
    await mysql_admin(place.server_url, [
        f"DROP USER IF EXISTS '{place.app}'@'{CLIENT_HOST}', '{place.owner}'@'{CLIENT_HOST}'",
        f"DROP DATABASE IF EXISTS `{place.name}`",
    ])


async def admin_execute(place: GrantedPlace, *statements: str) -> None:
    """Statements as the administrative user, on the place."""
    if place.backend == "postgres":
        import asyncpg

        admin = await asyncpg.connect(place.server_url, timeout=PROBE_TIMEOUT)
        try:
            await admin.execute(f'SET search_path = "{place.name}"')
            for statement in statements:
                await admin.execute(statement)
        finally:
            await admin.close()
    else:
        await mysql_admin(place.server_url, list(statements), database=place.name)


async def mysql_admin(server_url: str, statements: list[str], database: str | None = None
                      ) -> None:
    import aiomysql

    conn = await aiomysql.connect(**{**mysql_params(server_url), "db": database},
                                  connect_timeout=PROBE_TIMEOUT, autocommit=True)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
    finally:
        conn.close()


async def _migrate(place: GrantedPlace) -> None:
    storage = await open_storage(place.owner_url, pool_size=2)
    try:
        place.applied = await storage.migrate()
    finally:
        await storage.close()


# -- what the runtime user may do --------------------------------------------------------
async def runtime_privileges(
    place: GrantedPlace,
) -> tuple[set[str], dict[str, set[str]], list[str]]:
    """The place's tables, the runtime user's privileges per table, and anything broader
    (schema, database or global rights; on PostgreSQL also sequences it cannot use, or a
    table or sequence the owner does not own)."""
    if place.backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(place.server_url)
        try:
            rows = await conn.fetch(
                "SELECT c.relname, c.relkind::text AS relkind,"
                " pg_get_userbyid(c.relowner) AS owner,"
                " array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',"
                "  'TRUNCATE', 'REFERENCES', 'TRIGGER']) p"
                "  WHERE c.relkind = 'r' AND has_table_privilege($1, c.oid, p)) AS table_privs,"
                " c.relkind = 'S' AND has_sequence_privilege($1, c.oid, 'USAGE')"
                "  AND has_sequence_privilege($1, c.oid, 'SELECT')"
                "  AND has_sequence_privilege($1, c.oid, 'UPDATE') AS seq_ok"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $2 AND c.relkind IN ('r', 'S')", place.app, place.name)
            broader = [f"schema {p}" for p in ("CREATE",)
                       if await conn.fetchval("SELECT has_schema_privilege($1, $2, $3)",
                                              place.app, place.name, p)]
        finally:
            await conn.close()
        broader += [f"sequence {r['relname']} unusable" for r in rows
                    if r["relkind"] == "S" and not r["seq_ok"]]
        broader += [f"{r['relname']} owned by {r['owner']}" for r in rows
                    if r["owner"] != place.owner]
        return ({r["relname"] for r in rows if r["relkind"] == "r"},
                {r["relname"]: set(r["table_privs"]) for r in rows if r["relkind"] == "r"},
                broader)
    import aiomysql

    grantee = f"'{place.app}'@'{CLIENT_HOST}'"
    conn = await aiomysql.connect(**mysql_params(place.server_url), autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES"
                              " WHERE TABLE_SCHEMA = %s", (place.name,))
            tables = {r[0] for r in await cur.fetchall()}
            await cur.execute("SELECT TABLE_NAME, PRIVILEGE_TYPE FROM"
                              " information_schema.TABLE_PRIVILEGES WHERE GRANTEE = %s",
                              (grantee,))
            granted: dict[str, set[str]] = {}
            for table, privilege in await cur.fetchall():
                granted.setdefault(table, set()).add(privilege)
            await cur.execute("SELECT CONCAT(TABLE_SCHEMA, ': ', PRIVILEGE_TYPE) FROM"
                              " information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s"
                              " UNION ALL SELECT CONCAT('*.*: ', PRIVILEGE_TYPE) FROM"
                              " information_schema.USER_PRIVILEGES WHERE GRANTEE = %s"
                              " AND PRIVILEGE_TYPE <> 'USAGE'", (grantee, grantee))
            broader = [r[0] for r in await cur.fetchall()]
    finally:
        conn.close()
    return tables, granted, broader


async def refusal(place: GrantedPlace, sql: str) -> str | None:
    """The driver's error for `sql` run as the runtime user, or None when it ran."""
    if place.backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(place.app_url)
        try:
            await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await conn.close()
        return None
    import aiomysql
    import pymysql

    conn = await aiomysql.connect(**mysql_params(place.app_url), autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    except pymysql.err.OperationalError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return None
