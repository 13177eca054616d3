-- Which versions of DataSandbox have started on this store, the first and the last time each:
-- the data says which version wrote it. (A binary older than the store's schema refuses to
-- start before it reaches this table.)
CREATE TABLE software_versions (
    version TEXT PRIMARY KEY,
    first_started BIGINT NOT NULL,
    last_started BIGINT NOT NULL
);
