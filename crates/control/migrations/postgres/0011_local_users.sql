-- Local users for small sites (AppStream's user pool): an argon2id password hash, an
-- optional TOTP secret (wrapped by the master key, hex), the last TOTP time step used (a code
-- works once), and the failure count and lock that stop password guessing.
CREATE TABLE local_users (
    user_name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    totp_secret TEXT,
    totp_pending TEXT,
    totp_last_step BIGINT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    created BIGINT NOT NULL
);
-- Whether a token's holder proved a second factor when it was issued.
ALTER TABLE tokens ADD COLUMN mfa BIGINT;
