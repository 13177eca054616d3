//! Validated identifiers, names and the environment spec.
//!
//! Everything here is pure: parsing and validation with no IO, so that every other crate can
//! trust a value of these types without checking it again.

pub mod action;
pub mod arn;
pub mod home;
pub mod ids;
pub mod session_file;
pub mod spec;

pub use action::ActionName;
pub use home::{AccessMode, HomeOwner, UserRef};
pub use ids::{BucketName, InvalidName, Issuer, ObjectKey, ParameterName, UserId};
