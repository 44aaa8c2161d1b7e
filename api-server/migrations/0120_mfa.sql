-- 0120: multi-factor authentication (TOTP, RFC 6238) for accounts.
--
-- user_mfa: one row per account that started or finished enrolment. `id` is the user id (the
-- AAD row of the ciphertext, and the key `rotate-keys` uses); `secret_enc` is the TOTP secret
-- encrypted with the PHI key ring (AAD user_mfa, id, secret_enc); `confirmed_at` NULL means the
-- enrolment was started but not confirmed with a code (MFA not active yet); `last_used_step` is
-- the highest TOTP time step accepted: a code of that step or an older one is refused (replay).
CREATE TABLE user_mfa (
    id             uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_enc     bytea NOT NULL,
    phi_key_id     text NOT NULL,
    confirmed_at   timestamptz,
    last_used_step bigint,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- One-time recovery codes, stored as HMAC-SHA256 (blind-index key, per-user domain): each is
-- usable once (used_at set in the statement that accepts it).
CREATE TABLE mfa_recovery_codes (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- The second step of a login: a short-lived, single-use challenge (SHA-256 of a random token)
-- issued after the right password; not a session. `email_bidx` is the login's e-mail blind
-- index, so failed codes are counted with the failed passwords (login_attempts).
CREATE TABLE mfa_challenges (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email_bidx bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX mfa_challenges_expires_at ON mfa_challenges (expires_at);

-- A session opened with the password only, for an account whose role must use MFA but has not
-- enrolled yet: it may enrol (and log out, read /me) and nothing else, until enrolment is
-- confirmed.
ALTER TABLE sessions ADD COLUMN mfa_enrollment_only boolean NOT NULL DEFAULT false;

-- An admin's MFA reset ends every session of the account.
ALTER TABLE sessions DROP CONSTRAINT sessions_revoked_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoked_reason_check CHECK (revoked_reason IN (
    'logout', 'refresh_reuse', 'idle_timeout', 'user_deactivated',
    'password_changed', 'role_changed', 'max_age', 'mfa_reset'));
