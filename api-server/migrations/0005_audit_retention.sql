-- 0005: audit retention.
--
-- Audit rows may be deleted only once they are older than six years (2190 days, the HIPAA
-- minimum); UPDATE and TRUNCATE remain forbidden. `caduceus-api serve` purges rows older than
-- max(CADUCEUS_AUDIT_RETENTION_DAYS, 2190) days once a day (audit::purge_expired), always a
-- prefix of the chain, and records the last purged id and hash in `audit_purges` so that
-- `GET /audit-events/verify` can anchor the chain there and still detect any other deletion.

CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.occurred_at < now() - interval '2190 days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TABLE audit_purges (
    id             bigserial PRIMARY KEY,
    purged_at      timestamptz NOT NULL DEFAULT now(),
    through_id     bigint      NOT NULL,   -- every audit_events row with id <= through_id is gone
    through_hash   bytea       NOT NULL,   -- hash of row through_id: prev_hash of the next row
    rows_deleted   bigint      NOT NULL,
    retention_days integer     NOT NULL
);

CREATE FUNCTION audit_purges_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_purges is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_purges_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_purges
    FOR EACH ROW EXECUTE FUNCTION audit_purges_append_only();
CREATE TRIGGER audit_purges_no_truncate
    BEFORE TRUNCATE ON audit_purges
    FOR EACH STATEMENT EXECUTE FUNCTION audit_purges_append_only();
