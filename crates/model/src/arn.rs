//! ARNs, built in one place so that a resource has one name in records, answers and
//! policies: `arn:datasandbox:<service>:<region>:<account>:<resource>`, with the region empty
//! for account-wide services (identity) and both empty for global names (buckets, objects).

/// A resource of a regional service (`keys`, `parameters`, `streaming`, `notebooks`, …).
pub fn regional(service: &str, region: &str, account_id: &str, resource: &str) -> String {
    format!("arn:datasandbox:{service}:{region}:{account_id}:{resource}")
}

/// A resource of an account-wide service: who someone is (`identity`).
pub fn account_wide(service: &str, account_id: &str, resource: &str) -> String {
    format!("arn:datasandbox:{service}::{account_id}:{resource}")
}

/// A globally named resource: a bucket or an object in it (`storage`).
pub fn global(service: &str, resource: &str) -> String {
    format!("arn:datasandbox:{service}:::{resource}")
}
