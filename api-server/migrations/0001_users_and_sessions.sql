-- 0001: user accounts, login sessions, refresh tokens and failed-login tracking.
--
-- Emails identify staff and patient accounts; they are credentials, not clinical data, and are
-- stored in clear so login can look them up (case-insensitive unique index).

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,          -- Argon2id PHC string
    role          text        NOT NULL CHECK (role IN ('admin', 'physician', 'nurse', 'receptionist', 'patient')),
    display_name  text        NOT NULL,
    active        boolean     NOT NULL DEFAULT true,
    patient_id    uuid        NULL,              -- patient accounts only; FK added in 0002
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- One row per login = one refresh-token family. Access tokens carry the session id (`sid`) and
-- every request checks the row, so revocation (logout, reuse detection, idle timeout) is immediate.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz NULL,
    revoked_reason text        NULL CHECK (revoked_reason IN ('logout', 'refresh_reuse', 'idle_timeout', 'user_deactivated'))
);
CREATE INDEX sessions_user_active_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- Opaque refresh tokens, stored as SHA-256 only. A token is rotated (rotated_at set) on use;
-- presenting a rotated token again revokes the whole session (family).
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz NULL
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Failed logins per account, for the "5 failures in 15 minutes" lockout.
CREATE TABLE login_failures (
    id      bigserial PRIMARY KEY,
    user_id uuid        NOT NULL REFERENCES users (id),
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_user_at_idx ON login_failures (user_id, at);
