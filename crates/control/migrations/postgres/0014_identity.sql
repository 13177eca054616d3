-- Identity is (access mode, issuer, user id) everywhere: the identity provider that vouched
-- for a federated user is kept beside the user id wherever one is stored (NULL or '' for
-- local and custom users), so that `bob` of one provider is never `bob` of another.
ALTER TABLE tokens ADD COLUMN issuer TEXT;
-- How a token was issued: 'sign-in' (identity:SignIn, a SAML or OIDC sign-in: the user's own)
-- or 'issued' (identity:CreateSessionToken, an operator's grant to an application). Tokens
-- from before are taken as sign-ins, the narrower grant.
ALTER TABLE tokens ADD COLUMN channel TEXT;
ALTER TABLE sessions ADD COLUMN issuer TEXT;
ALTER TABLE instances ADD COLUMN issuer TEXT;
-- A streaming URL's row holds whom it was made for, to be compared with its claims.
ALTER TABLE streaming_urls ADD COLUMN issuer TEXT;
ALTER TABLE streaming_urls ADD COLUMN authentication_type TEXT;
-- A per-user notebook's owner is the whole identity; rows made before have no owner mode and
-- are never presigned for a session again (their names came from the user id alone).
ALTER TABLE notebooks ADD COLUMN owner_mode TEXT;
ALTER TABLE notebooks ADD COLUMN owner_issuer TEXT;
-- Federated tokens issued before carry no issuer: they must be signed in again.
DELETE FROM tokens WHERE access_mode = 'federated';
-- So must federated sessions still open: without an issuer they belong to nobody for sure.
UPDATE sessions SET state = 'EXPIRED', connection_state = 'NOT_CONNECTED', end_reason = 'IDENTITY_UPGRADE',
    end_time = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    WHERE authentication_type = 'SAML' AND state != 'EXPIRED';
-- Associations name the user's identity provider too ('' for USERPOOL users); SAML
-- associations made before name none and must be made again with their Issuer.
ALTER TABLE user_stack_associations ADD COLUMN issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE user_stack_associations DROP CONSTRAINT user_stack_associations_pkey;
ALTER TABLE user_stack_associations ADD PRIMARY KEY (stack, user_name, authentication_type, issuer);
