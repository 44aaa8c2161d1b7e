-- 0104: why a session ended, two more reasons: the account's password was changed or reset
-- (every session of the account ends), its role was changed, and the session reached the maximum
-- age (CADUCEUS_MAX_SESSION_HOURS, counted from the login in sessions.created_at).

ALTER TABLE sessions DROP CONSTRAINT sessions_revoked_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoked_reason_check CHECK (revoked_reason IN (
    'logout', 'refresh_reuse', 'idle_timeout', 'user_deactivated',
    'password_changed', 'role_changed', 'max_age'));
