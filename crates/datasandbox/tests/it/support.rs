//! Fixtures shared by the test modules. A test module imports what it shares from here and
//! never from another test module, so that moving or renaming a test moves nothing else.

pub mod backend;
pub mod browser;
pub mod files;
pub mod http;
pub mod instances;
pub mod nodes;
pub mod notebooks;
pub mod postgres;
pub mod s3;
pub mod saml;
pub mod server;
pub mod streaming;
pub mod tmpfs;
pub mod trail;
pub mod users;
