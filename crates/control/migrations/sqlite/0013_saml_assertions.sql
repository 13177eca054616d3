-- The SAML replay cache: each assertion id is accepted once, and remembered until the
-- assertion could no longer be valid anyway.
CREATE TABLE saml_assertions (
    assertion_id TEXT PRIMARY KEY,
    expires BIGINT NOT NULL
);
