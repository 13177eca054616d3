-- A local user's credentials have a generation, raised by a password change: a token holds
-- the generation its sign-in proved and acts only while the user still has it, so that no
-- sign-in still checking the old password (or a deleted user's) outlives the change.
ALTER TABLE local_users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN credential_epoch BIGINT;
-- Tokens an operator issued for local users (no longer issued): they acted as the person.
DELETE FROM tokens WHERE access_mode = 'local' AND channel = 'issued';
-- A user's sessions, found by their user: a deleted user's sessions to end, and the recordings
-- of a user's day (`recording.max_user_bytes_per_day`).
CREATE INDEX sessions_by_user ON sessions (user_id, authentication_type);
