-- qstack schema, version 5: each worker's pool-wide configuration, for `worker export-config`
-- and the configuration-skew check of `worker validate-pool`.
ALTER TABLE queue_workers ADD COLUMN config JSON NOT NULL DEFAULT ('{}');
