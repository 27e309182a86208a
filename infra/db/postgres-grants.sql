-- qstack on PostgreSQL 13+: the PostgreSQL equivalent of the specification's
-- least-privilege grants (mysql-grants.sql is the MySQL one).
--
-- Two roles:
--   qstack_owner  owns the schema and everything in it: runs `qctl db migrate` and
--                 `qctl restore` (which migrates first), and pg_dump.
--   qstack_app    what the services (registry, scheduler, worker, failover) log in as: it
--                 reads and writes rows of the schema's tables and uses its sequences, and
--                 nothing else. No CREATE on the schema, no ownership (so no ALTER, DROP or
--                 TRUNCATE). Advisory locks (liveness, locks, leader election) and
--                 LISTEN/NOTIFY (wake-ups) need no privilege.
--
-- Placeholders, to be replaced before running (README.md shows a sed line):
--   @DATABASE@        the database qstack lives in (DB_NAME, the path of DATABASE_URL)
--   @SCHEMA@          the schema of qstack's tables, e.g. qstack
--   @OWNER_PASSWORD@  qstack_owner's password (inside '...': double any single quote)
--   @APP_PASSWORD@    qstack_app's password (the same)
--
-- Run once, before the first migration, as a superuser (or a role with CREATEROLE that
-- owns the database), connected to @DATABASE@. It can be run again. Unlike MySQL's,
-- these grants need no second part: default privileges give the runtime role its rights
-- on every table and sequence the owner creates later, in this and future migrations.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qstack_owner') THEN
        CREATE ROLE qstack_owner;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qstack_app') THEN
        CREATE ROLE qstack_app;
    END IF;
END
$$;
ALTER ROLE qstack_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    PASSWORD '@OWNER_PASSWORD@';
ALTER ROLE qstack_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    PASSWORD '@APP_PASSWORD@';

GRANT CONNECT ON DATABASE "@DATABASE@" TO qstack_owner, qstack_app;
-- Where the database holds nothing else, also keep everyone else out:
--   REVOKE ALL ON DATABASE "@DATABASE@" FROM PUBLIC;

-- The schema belongs to the owner (so do the tables its migrations create); only the two
-- roles may look into it.
CREATE SCHEMA IF NOT EXISTS "@SCHEMA@" AUTHORIZATION qstack_owner;
ALTER SCHEMA "@SCHEMA@" OWNER TO qstack_owner;
REVOKE ALL ON SCHEMA "@SCHEMA@" FROM PUBLIC;
GRANT USAGE ON SCHEMA "@SCHEMA@" TO qstack_app;

-- Both find the tables without naming the schema (DATABASE_URL needs no search_path).
ALTER ROLE qstack_owner IN DATABASE "@DATABASE@" SET search_path = "@SCHEMA@";
ALTER ROLE qstack_app IN DATABASE "@DATABASE@" SET search_path = "@SCHEMA@";

-- Tables and sequences already there (a schema migrated before these grants)...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "@SCHEMA@" TO qstack_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "@SCHEMA@" TO qstack_app;

-- ...and those the owner's migrations create from now on. Sequences: identity columns'
-- (jobs.id and the history tables') and the fencing tokens' qstack_fencing_seq; SELECT
-- reads their values for a backup, UPDATE is setval() in a restore.
ALTER DEFAULT PRIVILEGES FOR ROLE qstack_owner IN SCHEMA "@SCHEMA@"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO qstack_app;
ALTER DEFAULT PRIVILEGES FOR ROLE qstack_owner IN SCHEMA "@SCHEMA@"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO qstack_app;
