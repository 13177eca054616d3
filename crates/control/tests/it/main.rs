//! The action pipeline's properties, in process: each test starts a real [`control::ControlPlane`]
//! on a temporary data directory with the default spec, calls it through its facade
//! ([`control::ControlPlane::call`]) and reads what it recorded from the trail's own files.
//! Nothing here needs root, a network or an external server: the tests drive the parameter
//! store, the key service, identity and deploy's validation, which live in the data directory.

mod authorization;
mod bounds;
mod error_codes;
mod redaction;
mod support;
