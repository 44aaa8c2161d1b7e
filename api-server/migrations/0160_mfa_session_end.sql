-- 0160: a session can end because MFA was turned on for its account: confirming an enrolment
-- ends every other session of the account, which was opened with the password alone.

ALTER TABLE sessions DROP CONSTRAINT sessions_revoked_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoked_reason_check CHECK (revoked_reason IN (
    'logout', 'refresh_reuse', 'idle_timeout', 'user_deactivated',
    'password_changed', 'role_changed', 'max_age', 'mfa_reset', 'mfa_enabled'));
