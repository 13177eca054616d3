-- The names of deleted local users. A local user's name is their identity: their home folder,
-- airlock requests and released exports are filed under it. A new user given a deleted
-- user's name would inherit all of it (review finding), so a name once deleted is not given
-- again.
CREATE TABLE retired_user_names (
    user_name TEXT PRIMARY KEY,
    retired BIGINT NOT NULL
);
