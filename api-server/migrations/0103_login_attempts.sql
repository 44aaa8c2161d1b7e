-- 0103: failed logins counted per e-mail blind index (HMAC of the trimmed, lower-cased e-mail,
-- as users.email_bidx), unknown e-mails included, so an unknown address is locked out exactly
-- like a known one and the answers do not tell them apart.
--
-- One row per e-mail with attempts in the current window: the API increments it with one
-- INSERT ... ON CONFLICT DO UPDATE ... RETURNING before it checks the password (an atomic
-- count: parallel guesses each get their own number, and only the first five in a window are
-- checked at all), and deletes it on a successful login. A window older than 15 minutes starts
-- over. Stale rows are purged daily by `serve`.
--
-- login_failures (per account, read-then-insert) is no longer written; it stays for the pods of
-- the previous release during a rolling upgrade and is dropped by a later migration.

CREATE TABLE login_attempts (
    email_bidx   bytea       PRIMARY KEY,
    attempts     integer     NOT NULL CHECK (attempts > 0),
    window_start timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_window_idx ON login_attempts (window_start);
