//! The SAML 2.0 service provider: the seed's enterprise sign-in (AppStream's SAML federation).
//!
//! The identity provider is trusted through its metadata, which the deploy's `saml` stack puts
//! in `<data-dir>/identity-providers/<idp_name>.xml`; it is read at each sign-in, so a deploy
//! or destroy takes effect at once. A response posted to the assertion consumer is
//! authentication (`Credentials::SamlResponse`) of `identity:AssumeRoleWithSAML`, never an
//! action's input, and is accepted only if every check below holds; each failure has its own
//! error code, and the pipeline audits it with the subject the response claimed.
//!
//! Why xmlsec1, and what we check ourselves. XML signature verification is where SAML
//! implementations fail (canonicalization, reference resolution, key selection), so no code of
//! ours does it: Debian's `xmlsec1`, the engine pysaml2 and most service providers use, runs
//! once per response, under a time limit, with the IdP's certificate from the metadata as its
//! only key (`KeyInfo` in the message is ignored) and only same-document references. What
//! xmlsec1 cannot know is *which* element the application will read — the root of signature
//! wrapping — so before it runs, the document's shape is pinned down ([`shape`]): no DTD,
//! unique IDs, exactly one assertion and it a child of the response, signatures only on the
//! response or that assertion, each referencing its own parent, with SHA-2 algorithms and the
//! exclusive canonicalization. Everything read afterwards (subject, conditions, attributes)
//! comes from that one assertion, and every value read must be plain text (a comment inside a
//! NameID is refused, not skipped).
//!
//! SP-initiated request ids, like OIDC's states (`oidc.rs`), verify themselves: they are MAC'd
//! with the server's key together with their expiry, so nothing is stored for a sign-in until
//! its answer arrives. Answers are single-use through the `federation_replay` table.

mod provider;
mod response;
mod shape;
mod xml;
mod xmlsec;

pub(crate) use provider::{login_url, parse_metadata, sp_metadata};
pub(crate) use response::{claimed_subject, verify};
