-- A stack's watermark (DataSandbox's addition): ENABLED draws the user, the session and the
-- time into the pixels of its sessions' displays. NULL is DISABLED.
ALTER TABLE stacks ADD COLUMN watermark TEXT;
