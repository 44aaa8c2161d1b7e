-- 0004: append-only, hash-chained audit trail. Never holds PHI: identifiers, action names,
-- outcome, client metadata and the stated purpose (break-glass / override reason) only.
--
-- Rows are written by the audit writer task (src/audit/writer.rs) in batches under
-- pg_advisory_xact_lock(audit::CHAIN_LOCK), which assigns `id` = previous id + 1 and
-- hash = sha256(prev_hash || canonical record). `GET /audit-events/verify` recomputes the chain.

CREATE TABLE audit_events (
    id            bigint PRIMARY KEY,
    occurred_at   timestamptz NOT NULL,
    actor_id      uuid        NULL,
    actor_role    text        NULL,
    action        text        NOT NULL,
    resource_type text        NOT NULL,
    resource_id   text        NULL,
    patient_id    uuid        NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('success', 'denied', 'error')),
    client_ip     text        NULL,
    user_agent    text        NULL,
    request_id    text        NULL,
    purpose       text        NULL,
    prev_hash     bytea       NOT NULL,
    hash          bytea       NOT NULL
);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, id);
CREATE INDEX audit_events_patient_idx ON audit_events (patient_id, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);

-- The API's role cannot change history: UPDATE, DELETE and TRUNCATE raise.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
