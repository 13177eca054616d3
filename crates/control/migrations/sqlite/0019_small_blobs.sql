-- Small object bodies, kept here rather than as a file (or S3 object) each, and written in the
-- transaction that commits their object (`core::blobs`). Objects name them `inline-…`.
CREATE TABLE small_blobs (
    name TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
