-- 0110: the API's runtime role may not touch the audit trail except by appending.
--
-- `caduceus-api db-setup` (run with the owner's credentials) creates the runtime role and grants
-- it SELECT/INSERT on audit_events and SELECT on audit_purges, no UPDATE, DELETE, TRUNCATE or
-- DDL (store::roles). The retention purge of audit rows older than six years is the only
-- deletion left; it runs through this function, which executes with its owner's rights and
-- deletes nothing else: the oldest prefix of the chain older than max(days, 2190) days, with its
-- anchor in audit_purges. The runtime role gets EXECUTE on it and on nothing else of the kind.
-- The triggers of 0004/0005 stay as the second line.

CREATE FUNCTION audit_purge_expired(days integer) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    keep_days integer := GREATEST(days, 2190);
    through_row bigint;
    first_row bigint;
    through_hash bytea;
    deleted bigint;
BEGIN
    -- the audit writers' chain lock (store::audit::CHAIN_LOCK)
    PERFORM pg_advisory_xact_lock(871086596305);
    -- the purged prefix ends just before the first row that is still within retention
    SELECT COALESCE(
        (SELECT min(id) - 1 FROM audit_events WHERE occurred_at >= now() - make_interval(days => keep_days)),
        (SELECT max(id) FROM audit_events))
      INTO through_row;
    SELECT min(id) INTO first_row FROM audit_events;
    IF through_row IS NULL OR first_row IS NULL OR through_row < first_row THEN
        RETURN 0;
    END IF;
    SELECT hash INTO through_hash FROM audit_events WHERE id = through_row;
    DELETE FROM audit_events WHERE id <= through_row;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    INSERT INTO audit_purges (through_id, through_hash, rows_deleted, retention_days)
        VALUES (through_row, through_hash, deleted, keep_days);
    RETURN deleted;
END;
$$;

REVOKE ALL ON FUNCTION audit_purge_expired(integer) FROM PUBLIC;
