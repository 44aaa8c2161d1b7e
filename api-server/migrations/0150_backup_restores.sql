-- 0150: restores of a backup, recorded by the backup agent for the audit trail.
--
-- `caduceus-backup restore` writes one row into the restored database before swapping it in
-- (it does not hold the audit key, so it cannot append to the keyed chain itself); `caduceus-api
-- serve` turns every row with `audited_at IS NULL` into a `backup.restore` audit event at start
-- (and with the daily maintenance) and sets `audited_at` in the same transaction. No PHI: names,
-- times, the key id and the audit chain head of the backup.
--
-- The agent runs this file itself on a restored database whose schema predates it, so every
-- statement here must stay idempotent (IF NOT EXISTS) and grant nothing (`db-setup` grants the
-- runtime role SELECT/UPDATE with every other table).

CREATE TABLE IF NOT EXISTS backup_restores (
    id                 bigserial   PRIMARY KEY,
    restored_at        timestamptz NOT NULL DEFAULT now(),
    backup_name        text        NOT NULL,
    backup_time        timestamptz NOT NULL,
    key_id             text        NOT NULL,
    -- false only for a backup made before manifest MACs, restored with --allow-unauthenticated
    manifest_authenticated boolean NOT NULL,
    -- the backup's audit chain head (`<id>`, lowercase hex hash), NULL without an audit trail
    audit_head_id      bigint      NULL,
    audit_head_hash    text        NULL,
    -- where the database it replaced was kept (`<db>_pre_restore_<ts>`), NULL if there was none
    previous_database  text        NULL,
    audited_at         timestamptz NULL
);
