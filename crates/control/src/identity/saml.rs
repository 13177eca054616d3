//! The SAML 2.0 service provider: the seed's enterprise sign-in (AppStream's SAML federation).
//!
//! The identity provider is trusted through its metadata, which the deploy's `saml` stack puts
//! in `<data-dir>/identity-providers/<idp_name>.xml`; it is read at each sign-in, so a deploy
//! or destroy takes effect at once. A response posted to the assertion consumer is
//! authentication (`Credentials::SamlResponse`), never an action's input, and is accepted only
//! if every check of [`response`] holds; each failure has its own error code, and the pipeline audits it
//! with the subject the response claimed.
//!
//! The signature is checked by Debian's `xmlsec1` (the engine pysaml2 and most SPs use), never
//! by code of ours, with the IdP's certificate from the metadata as the only key (`KeyInfo` in
//! the message is ignored) and only same-document references. What xmlsec1 cannot know is
//! *which* element the application will read, so before it runs, the document's shape is
//! pinned down ([`shape`]): no DTD, unique IDs, exactly one assertion and it a child of the
//! response, signatures only on the response or that assertion, each referencing its own
//! parent, with SHA-2 algorithms and the exclusive canonicalization. Everything read
//! afterwards (subject, conditions, attributes) comes from that one assertion, and every
//! value read must be plain text (a comment inside a NameID is refused, not skipped).
//!
//! The files: [`provider`] (the IdP's metadata, this SP's metadata and the start of an
//! SP-initiated sign-in), [`response`] (verifying a posted response), [`shape`], [`xmlsec`]
//! (the signature check) and [`xml`] (SAML's namespaces and strict reading).

mod provider;
mod response;
mod shape;
mod xml;
mod xmlsec;

pub(crate) use provider::{login_url, parse_metadata, sp_metadata};
pub(crate) use response::{claimed_subject, verify};
