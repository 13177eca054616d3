-- The names of deleted local users. A local user's name is their identity: their home folder,
-- airlock requests and released exports are filed under it. A new user given a deleted
-- user's name would inherit all of it (review finding), so a name once deleted is not given
-- again.
CREATE TABLE retired_user_names (
    user_name TEXT PRIMARY KEY,
    retired BIGINT NOT NULL
);
-- Names of local users deleted before this table existed, known by what they left: their
-- sessions, stack associations and airlock requests.
INSERT INTO retired_user_names (user_name, retired)
SELECT DISTINCT name, 0 FROM (
    SELECT user_id AS name FROM sessions WHERE authentication_type = 'USERPOOL'
    UNION SELECT user_name AS name FROM user_stack_associations WHERE authentication_type = 'USERPOOL'
    UNION SELECT substr(creator, 7) AS name FROM airlock_requests WHERE creator LIKE 'local:%'
) AS left_behind
WHERE name NOT IN (SELECT user_name FROM local_users)
ON CONFLICT (user_name) DO NOTHING;
