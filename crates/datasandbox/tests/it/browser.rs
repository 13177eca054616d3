//! Tests in a real browser (Debian's Chromium, driven by Playwright from `web/tests/`). Only
//! tests under this module may start a Chromium (`support::browser` checks), and
//! `.config/nextest.toml` runs exactly these one at a time: two at once, each with a session's
//! instance behind it, starve each other of CPU on a two-core machine and time out.

mod airlock;
mod console;
mod desktop;
mod notebooks;
mod oidc;
mod portal;
mod recordings;
mod saml;
mod session_page;
mod tls;
