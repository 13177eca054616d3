//! The attack table of the outside security review (issue 16): one module per finding, named
//! by its number, each test performing the attack and checking that it fails. Each was seen
//! to succeed (the test failing) before its fix. Rows that only a unit test can drive live
//! beside their code, named `attack_fNN_…` (`cargo nextest run -E 'test(/attack_f/)'`): finding
//! 12's in the RFB filter (`gateway/src/rfb`), and unit rows of 4, 6, 8, 10, 14 and 17.

mod f01_terminal;
mod f02_host_files;
mod f03_id_ranges;
mod f04_identity;
mod f05_bounded_dirs;
mod f05_trail_reserve;
mod f06_bounded_records;
mod f07_secrets_in_argv;
mod f08_direct_view;
mod f09_origins;
mod f10_credentials;
mod f11_login_csrf;
mod f13_audit_completeness;
mod f14_key_files;
mod f15_image_packages;
mod f16_denial_of_service;
mod f16_gateway;
mod f16_ucounts;
mod f17_csv;
mod f17_identity;
mod f17_metrics;
mod f18_trail_deletion;
