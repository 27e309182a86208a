-- qstack on MySQL 8 / MariaDB 10.6+: the specification's least-privilege grants
-- ("Database Security"), adapted to qstack's tables.
--
-- Two accounts:
--   qstack_owner  owns the schema: runs `qctl db migrate` (CREATE/ALTER TABLE, CREATE INDEX),
--                 `qctl restore` (it migrates first, then moves AUTO_INCREMENT
--                 counters with ALTER TABLE) and mysqldump.
--   qstack_app    what the services (registry, scheduler, worker, failover) log in as: it
--                 reads and writes rows of qstack's tables, and nothing else. No DDL, no
--                 FILE, PROCESS, SUPER or GRANT OPTION. GET_LOCK (liveness, locks, leader
--                 election) needs no privilege.
--
-- Placeholders, to be replaced before running (README.md shows a sed line):
--   @DATABASE@        the database qstack lives in (DB_NAME, the path of DATABASE_URL)
--   @CLIENT_HOST@     where the services connect from: a host name, an address, or a
--                     pattern such as 10.0.1.% (the specification's worker network)
--   @OWNER_PASSWORD@  qstack_owner's password (inside '...': double any single quote)
--   @APP_PASSWORD@    qstack_app's password (the same)
--
-- Run as an administrative account (root), in two parts:
--   part 1 before the first `qctl db migrate`;
--   part 2 after it, and again after every release whose migrations add a table: MySQL
--   refuses a table-level grant on a table that does not exist yet (ERROR 1146), so the
--   runtime user's rights are given table by table once the tables are there.
-- Both parts can be run again. FLUSH PRIVILEGES (in the specification) is not needed:
-- GRANT and CREATE USER take effect at once; FLUSH is only for edits of the mysql.* tables.

-- == part 1: the database, the two users, the owner's rights ==

CREATE DATABASE IF NOT EXISTS `@DATABASE@` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE USER IF NOT EXISTS 'qstack_owner'@'@CLIENT_HOST@' IDENTIFIED BY '@OWNER_PASSWORD@';
CREATE USER IF NOT EXISTS 'qstack_app'@'@CLIENT_HOST@' IDENTIFIED BY '@APP_PASSWORD@';

-- Everything on qstack's database and nothing outside it. LOCK TABLES, SHOW VIEW and
-- TRIGGER are what mysqldump reads with (run it with --single-transaction --no-tablespaces:
-- tablespaces need the global PROCESS privilege on MySQL 8.0.21+).
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES,
      LOCK TABLES, SHOW VIEW, TRIGGER
    ON `@DATABASE@`.* TO 'qstack_owner'@'@CLIENT_HOST@';

-- `qctl db performance-stats` reads index usage and the slowest statements (digests)
-- from performance_schema; run it with the owner's DSN. The runtime user gets an answer
-- without them (a note says what is missing).
GRANT SELECT ON performance_schema.* TO 'qstack_owner'@'@CLIENT_HOST@';

-- == part 2: the runtime user's rights, table by table (after `qctl db migrate`) ==

-- The specification's five tables.
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.queue_workers TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.distributed_locks TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.job_assignments TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.worker_health_checks TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.failover_events TO 'qstack_app'@'@CLIENT_HOST@';

-- qstack's own: the jobs, the shared /admin/metrics snapshot, paused queues.
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.jobs TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.system_snapshots TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.queue_settings TO 'qstack_app'@'@CLIENT_HOST@';

-- This dialect's bookkeeping: the fencing-token counter (a sequence in PostgreSQL) and the
-- wake-up notifications (LISTEN/NOTIFY there), which subscribers also delete when old.
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.qstack_sequences TO 'qstack_app'@'@CLIENT_HOST@';
GRANT SELECT, INSERT, UPDATE, DELETE ON `@DATABASE@`.qstack_notifications TO 'qstack_app'@'@CLIENT_HOST@';

-- Read only: `qctl db status`, `qctl worker validate-config` and backups read which
-- migrations ran.
GRANT SELECT ON `@DATABASE@`.schema_migrations TO 'qstack_app'@'@CLIENT_HOST@';
