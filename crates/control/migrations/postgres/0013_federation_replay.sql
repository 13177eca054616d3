-- The federation replay cache: a SAML assertion id, or an OIDC sign-in's state, is accepted
-- once, and remembered until it could no longer be valid anyway.
CREATE TABLE federation_replay (
    id TEXT PRIMARY KEY,
    expires BIGINT NOT NULL
);
