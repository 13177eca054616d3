-- What each researcher added to airlock requests, by the hour. Every file added stays in the
-- airlock bucket, replaced and removed ones too (nothing may delete from it), so what one
-- researcher may add in a day is bounded (`airlock.max_bytes_per_day`). An addition adds to
-- its hour's row, holding its researcher's row in `airlock_upload_budgets` (a row lock on
-- PostgreSQL) until it has summed the day's.
CREATE TABLE airlock_uploads (
    creator TEXT NOT NULL,
    hour BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (creator, hour)
);
CREATE TABLE airlock_upload_budgets (
    creator TEXT PRIMARY KEY
);
