-- In pixel-streaming sessions a presigned notebook URL opens only in the browser inside the
-- session's instance: the URL and the notebook access it grants carry that instance's
-- private address, and requests from any other address are refused. NULL in direct mode,
-- where the session's cookie binds them instead.
ALTER TABLE notebook_urls ADD COLUMN instance_address TEXT;
ALTER TABLE notebook_access ADD COLUMN instance_address TEXT;
