-- A stack's stream view (DataSandbox's addition to the stack): DESKTOP or APP stream pixels
-- from the instance's display; DIRECT hands the notebook to the user's browser.
ALTER TABLE stacks ADD COLUMN stream_view TEXT;
