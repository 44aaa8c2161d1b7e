-- 0102: account e-mails are PHI (a patient's login e-mail identifies the patient): encrypt them.
--
-- New columns:
--   email_enc  AES-256-GCM ciphertext of the trimmed e-mail as entered, AAD (users, id, email_enc),
--              written by the application (src/users/mod.rs) like every other PHI column;
--   email_bidx HMAC-SHA256 blind index (blind-index key, domain "user-email") of the trimmed,
--              lower-cased e-mail; UNIQUE, used by login and the duplicate check;
--   phi_key_id the data key of email_enc (`caduceus-api rotate-keys` re-encrypts by it).
--
-- Existing rows keep their plaintext `email` until the application converts them: SQL cannot
-- encrypt (the keys never reach the database). `caduceus-api serve` (at start, then daily) and
-- `caduceus-api rotate-keys` convert plaintext rows in committed batches (resumable) and set
-- `email` to NULL in the same UPDATE. Until then login also finds a not yet converted row by
-- lower(email). A later migration drops the then always-NULL `email` column and its index, once
-- every deployment has run a converting release.
--
-- Every row is either legacy (plaintext e-mail, no ciphertext) or fully encrypted (ciphertext,
-- blind index and key id, no plaintext): the CHECK below refuses anything in between.

ALTER TABLE users
    ALTER COLUMN email DROP NOT NULL,
    ADD COLUMN email_enc  bytea NULL,
    ADD COLUMN email_bidx bytea NULL,
    ADD COLUMN phi_key_id text  NULL,
    ADD CONSTRAINT users_email_encrypted_or_legacy CHECK (
        (email IS NOT NULL AND email_enc IS NULL AND email_bidx IS NULL AND phi_key_id IS NULL)
        OR (email IS NULL AND email_enc IS NOT NULL AND email_bidx IS NOT NULL AND phi_key_id IS NOT NULL)
    );

CREATE UNIQUE INDEX users_email_bidx_key ON users (email_bidx);
-- the converter walks the remaining plaintext rows
CREATE INDEX users_email_legacy_idx ON users (id) WHERE email IS NOT NULL;
