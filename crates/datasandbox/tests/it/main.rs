//! End-to-end tests: each starts the real `datasandbox` binary on a fresh data directory and
//! talks to it through the CLI, the control socket and the HTTP API.

mod attacks;
mod bad_input;
mod console;
mod crash;
mod deploy;
mod desktop;
mod files;
mod flows;
mod http;
mod instances;
mod local_users;
mod notebooks;
mod oidc;
mod portal;
mod postgres;
mod s3;
mod saml;
mod sandbox;
mod server;
mod session_page;
mod stream;
mod streaming;
mod tidy;
mod trail;

pub use server::Server;
