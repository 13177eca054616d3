//! End-to-end tests: each starts the real `datasandbox` binary on a fresh data directory and
//! talks to it through the CLI, the control socket and the HTTP API.

mod airlock;
mod attacks;
mod backup;
mod bad_input;
mod browser;
mod cluster;
mod code_audit;
mod crash;
mod datasets;
mod deploy;
mod files;
mod flows;
mod instances;
mod kernel_input;
mod local_users;
mod notebooks;
mod package;
mod postgres;
mod quiet;
mod recordings;
mod saml;
mod sandbox;
mod stream;
mod streaming;
mod support;
mod tidy;
mod tls;
mod trail;
mod upgrades;
