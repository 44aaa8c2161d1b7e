-- 0130: the audit chain is keyed with a key the database does not hold.
--
-- New rows carry hash = HMAC-SHA256(audit key, prev_hash || canonical row) (hash_scheme 1); the
-- audit key is derived by the API from its PHI key ring (crypto::AuditKey), so whoever owns the
-- database can no longer recompute a rewritten chain that verifies. Rows written before this
-- migration keep their plain SHA-256 chain (hash_scheme 0, set here for every existing row) and
-- keep verifying; a scheme-0 row after a scheme-1 row is invalid (docs/compliance.md).
--
-- The column has no default after this migration: a writer must name its scheme. A release
-- older than this one, still running during the rolling upgrade, can therefore no longer append
-- (its audited requests answer 503, fail closed) instead of interleaving unkeyed rows with
-- keyed ones, which would make the chain fail verification for good.

ALTER TABLE audit_events
    ADD COLUMN hash_scheme smallint NOT NULL DEFAULT 0
    CONSTRAINT audit_events_hash_scheme CHECK (hash_scheme IN (0, 1));
ALTER TABLE audit_events ALTER COLUMN hash_scheme DROP DEFAULT;
