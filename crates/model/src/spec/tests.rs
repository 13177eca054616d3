use super::*;
use crate::ids::BucketName;

fn problems(text: &str, overrides: &[&str]) -> Vec<String> {
    let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
    match Spec::parse(text, &overrides) {
        Ok(_) => Vec::new(),
        Err(err) => err.problems.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect(),
    }
}

#[test]
fn empty_spec_gives_the_seed_defaults() {
    let spec = Spec::parse("", &[]).expect("empty spec is valid");
    assert_eq!(spec.vpc_cidr.to_string(), "10.10.0.0/16");
    assert_eq!(spec.environment_name, "datasandbox");
    assert_eq!(spec.fleet_type, FleetType::OnDemand);
    assert_eq!(spec.instance_type, "stream.standard.small");
    assert_eq!(spec.idp_name, "idp_sample");
    assert_eq!(spec.buckets[0].name.as_str(), "datasandbox-home");
    assert_eq!(spec.fleets[0].name, "datasandbox-fleet");
    assert_eq!(spec.stacks[0].name, "datasandbox-stack");
    assert_eq!(spec.notebooks[0].name, "Data-Sandbox-Notebook");
}

#[test]
fn written_default_spec_equals_the_embedded_defaults() {
    let written = Spec::parse(&default_spec_text(), &[]).expect("default spec is valid");
    assert_eq!(written, Spec::parse("", &[]).expect("empty spec is valid"));
}

#[test]
fn overrides_reach_parameters_and_nested_keys() {
    let spec = Spec::parse("", &["fleet_type=ALWAYS_ON".into(), "storage.max_object_size=1024".into(), "environment_name=lab".into()])
        .expect("valid overrides");
    assert_eq!(spec.fleet_type, FleetType::AlwaysOn);
    assert_eq!(spec.fleets[0].fleet_type, FleetType::AlwaysOn);
    assert_eq!(spec.fleets[0].name, "lab-fleet");
    assert_eq!(spec.max_object_size, 1024);
    assert_eq!(spec.buckets[0].name.as_str(), "lab-home");
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let text = r#"
vpc_cidr = "8.8.0.0/16"
fleet_typ = "ALWAYS_ON"
[fleets.analysts]
disconnect_timeout = 345600
idle_disconnect_timeout = 30
instance_type = "stream.huge"
[storage]
backend = "tape"
"#;
    let found = problems(text, &["server.api_listen=nowhere", "nonsense"]);
    let expected = [
        "nonsense: an override must have the form key=value",
        "vpc_cidr: `8.8.0.0/16` is not a private (RFC 1918) range",
        "server.api_listen: `nowhere` is not an address:port",
        "storage.backend: `tape` is not one of local, s3",
        "fleets.analysts.disconnect_timeout: 345600 is outside 60..=36000",
        "fleets.analysts.idle_disconnect_timeout: 30 must be 0 (off) or within 60..=36000",
        "fleets.analysts.instance_type: `stream.huge` is not a defined instance type (stream.standard.small, stream.standard.medium, stream.standard.large, stream.compute.large, stream.memory.large)",
        "fleet_typ: unknown key; did you mean `fleet_type`?",
    ];
    for line in expected {
        assert!(found.iter().any(|f| f == line), "missing `{line}` in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn syntax_errors_name_the_line() {
    let found = problems("a = 1\nb = [\n", &[]);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("datasandbox.toml:") && found[0].contains("line"), "{found:?}");
}

#[test]
fn type_errors_say_what_was_expected() {
    let found = problems("[storage]\nmax_object_size = \"big\"\n[[buckets]]\nname = \"Bad_Bucket\"\n", &[]);
    assert_eq!(
        found,
        vec![
            "storage.max_object_size: expected an integer, found string `\"big\"`".to_owned(),
            "buckets[0].name: bucket name `Bad_Bucket` contains `B`; allowed are lower-case letters, digits, `-` and `.`".to_owned(),
        ]
    );
}

#[test]
fn datasets_name_existing_non_home_buckets() {
    let buckets = r#"
[[buckets]]
name = "datasandbox-home"
home_folders = true
[[buckets]]
name = "research"
"#;
    let spec = Spec::parse(&format!("{buckets}[datasets.trials]\nbucket = \"research\"\nprefix = \"trials/\"\n"), &[]).expect("valid");
    assert_eq!(
        spec.datasets,
        vec![DatasetSpec {
            name: "trials".into(),
            bucket: BucketName::new("research").expect("valid name"),
            prefix: "trials/".into(),
            read_audit: ReadAudit::Ranges
        }]
    );
    let bad = format!(
        "{buckets}[datasets.\"../up\"]\nbucket = \"research\"\n[datasets.homes]\nbucket = \"datasandbox-home\"\n[datasets.gone]\nbucket = \"missing\"\n[datasets.escape]\nbucket = \"research\"\nprefix = \"a/../b\"\n"
    );
    assert_eq!(
        problems(&bad, &[]),
        vec![
            "datasets.../up: `../up` cannot name a directory under /data; use up to 64 letters, digits, `-`, `_` or `.`",
            "datasets.escape.prefix: `a/../b` must be a key prefix such as `trials/2026/`",
            "datasets.gone.bucket: `missing` is not a bucket defined in this spec",
            "datasets.homes.bucket: `datasandbox-home` holds home folders, which are never datasets",
        ]
    );
}

#[test]
fn oidc_needs_an_issuer_url_a_client_and_the_openid_scope() {
    assert_eq!(Spec::parse("", &[]).expect("valid").oidc, None, "no [oidc], no OpenID Connect");
    let spec = Spec::parse("", &["oidc.issuer=https://op.example".into(), "oidc.client_id=ds".into()]).expect("valid");
    let oidc = spec.oidc.expect("configured");
    assert_eq!((oidc.scopes.as_str(), oidc.user_claim.as_str(), oidc.session_seconds), ("openid email", "sub", 3600));
    let found = problems("", &["oidc.issuer=op.example/", "oidc.scopes=email", "oidc.session_seconds=60"]);
    for expected in ["oidc.issuer", "oidc.client_id", "oidc.scopes", "oidc.session_seconds"] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected} not in {found:?}");
    }
}

#[test]
fn a_direct_notebook_stack_must_enable_file_transfer() {
    // The seed's stack disables downloads: as DIRECT (the notebook in the user's browser) it
    // would promise what it cannot hold.
    let found = problems("", &["stream_view=DIRECT"]);
    assert_eq!(
        found,
        [
            "stacks.datasandbox-stack.stream_view: DIRECT hands the notebook to the user's browser, where FILE_DOWNLOAD cannot hold: enable it in user_settings, or stream the session (DESKTOP or APP)"
        ]
    );
    assert!(problems("", &["stream_view=DIRECT", "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED"]).is_empty());
    // A DIRECT stack of another application hands no notebook over.
    assert!(problems("", &["stream_view=DIRECT", "stacks.datasandbox-stack.application=shell"]).is_empty());
}

#[test]
fn notebooks_have_an_origin_of_their_own() {
    let spec = Spec::parse("", &[]).expect("valid");
    assert_eq!(spec.notebook_listen.to_string(), "127.0.0.1:8751", "the API's next port");
    let spec = Spec::parse("", &["server.api_listen=127.0.0.1:0".into()]).expect("valid");
    assert_eq!(spec.notebook_listen.port(), 0);
    assert_eq!(
        problems("", &["server.public_url=https://sandbox.example"]),
        ["server.notebook_url: is required with public_url: the URL (another host name or port) where notebook_listen is reached"]
    );
    assert_eq!(
        problems("", &["server.public_url=https://sandbox.example", "server.notebook_url=https://sandbox.example"]),
        ["server.notebook_url: must differ from public_url: notebooks are served from an origin of their own"]
    );
    assert!(problems("", &["server.public_url=https://sandbox.example", "server.notebook_url=https://nb.sandbox.example"]).is_empty());
}

#[test]
fn a_fleet_bounds_the_sessions_one_user_may_hold() {
    assert_eq!(Spec::parse("", &[]).expect("valid").fleets[0].max_sessions_per_user, 5);
    let found = problems("", &["fleets.datasandbox-fleet.max_sessions_per_user=0"]);
    assert_eq!(found, ["fleets.datasandbox-fleet.max_sessions_per_user: 0 is outside 1..=100"]);
}

#[test]
fn the_trail_witness_is_an_absolute_directory_and_the_reserve_is_bounded() {
    let spec = Spec::parse("", &["audit.witness=/mnt/witness".into()]).expect("valid witness");
    assert_eq!(spec.audit.witness.as_deref(), Some(std::path::Path::new("/mnt/witness")));
    assert_eq!(spec.audit.reserve_bytes, 16 * 1024 * 1024);
    for (setting, phrase) in [
        ("audit.witness=witness", "must be an absolute path"),
        ("audit.witness=/mnt/../data/trail", "must not contain `..`"),
        ("audit.reserve_bytes=1024", "reserve_bytes"),
    ] {
        let found = problems("", &[setting]);
        assert!(found.iter().any(|p| p.contains(phrase)), "{setting}: {found:?}");
    }
}

#[test]
fn plain_http_is_for_loopback_and_tls_comes_from_files_or_an_https_public_url() {
    use super::ServerTls;
    let tls = |overrides: &[&str]| Spec::parse("", &overrides.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>()).map(|s| s.tls);
    assert_eq!(tls(&[]).expect("valid"), ServerTls::Off);
    let https = ["server.public_url=https://sandbox.example", "server.notebook_url=https://nb.sandbox.example"];
    assert_eq!(tls(&https).expect("valid"), ServerTls::LocalAuthority);
    let files = tls(&["server.api_listen=0.0.0.0:8750", "server.tls_cert=/etc/c.pem", "server.tls_key=/etc/k.pem"]).expect("valid");
    assert_eq!(files, ServerTls::Files { cert: "/etc/c.pem".into(), key: "/etc/k.pem".into() });
    // Behind a proxy that terminates TLS: the operator says so, and no certificate is made.
    let proxied = [https[0], https[1], "server.api_listen=0.0.0.0:8750", "server.allow_plain_http=true"];
    assert_eq!(tls(&proxied).expect("valid"), ServerTls::Off);
    let found = problems("", &["server.api_listen=0.0.0.0:8750"]);
    assert_eq!(found.len(), 2, "both listeners are named: {found:?}");
    assert!(found[0].starts_with("server.api_listen: `0.0.0.0:8750` is not a loopback address"), "{found:?}");
    assert_eq!(
        problems("", &["server.tls_cert=/etc/c.pem"]),
        ["server.tls_key: tls_cert and tls_key go together: give both (PEM files) or neither"]
    );
}

/// A NUL character in a setting, from the file or an override, is a problem with its path,
/// before anything is deployed (the store's PostgreSQL would refuse it halfway through).
#[test]
fn a_nul_character_in_any_setting_is_a_problem() {
    let text = "environment_name = \"lab\\u0000\"\n[stacks.datasandbox-stack]\ndescription = \"a\\u0000b\"\n\"k\\u0000\" = 1\n";
    let found = problems(text, &["fleets.datasandbox-fleet.description=\"x\\u0000\""]);
    for path in ["environment_name", "stacks.datasandbox-stack.description", "fleets.datasandbox-fleet.description"] {
        assert!(found.contains(&format!("{path}: holds a NUL character (\\u0000), which no setting may")), "{path} in {found:?}");
    }
    assert!(found.contains(&"stacks.datasandbox-stack.k\\u0000: a key holds a NUL character (\\u0000)".to_owned()), "{found:?}");
}

/// An identity provider is reached over HTTPS, or over plain HTTP on this host's loopback only
/// (review finding: `http://` anywhere passed the issuer's check).
#[test]
fn an_oidc_provider_is_reached_over_https_or_on_loopback_only() {
    for allowed in
        ["https://idp.example.com", "HTTPS://idp.example.com/realms/x", "http://127.0.0.1:8080", "http://[::1]:80/x", "http://localhost"]
    {
        assert!(super::provider_url_allowed(allowed), "{allowed}");
    }
    for refused in [
        "http://idp.example.com",
        "http://10.0.0.1:8080",
        "http://127.0.0.1.example.com",
        "http://127.0.0.1@idp.example.com",
        "http://localhost.example.com",
        "ftp://idp.example.com",
        "idp.example.com",
    ] {
        assert!(!super::provider_url_allowed(refused), "{refused}");
    }
    assert!(problems("", &["oidc.issuer=http://idp.example.com", "oidc.client_id=x"]).iter().any(|p| p.contains("oidc.issuer")));
    assert!(!problems("", &["oidc.issuer=http://127.0.0.1:9", "oidc.client_id=x"]).iter().any(|p| p.contains("oidc.issuer")));
}

/// Trusted proxies are addresses or networks, none wide enough for anyone to name their own
/// address, and none among the instances' (whose code would then choose its address).
#[test]
fn trusted_proxies_are_named_narrowly_and_never_the_instances() {
    let spec = Spec::parse("", &[r#"server.trusted_proxies=["127.0.0.1", "192.168.7.0/24", "fd00::1", "::ffff:192.168.9.9"]"#.to_owned()])
        .expect("valid");
    let named: Vec<String> = spec.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(named, ["127.0.0.1/32", "192.168.7.0/24", "fd00::1/128", "192.168.9.9/32"]);
    assert!(Spec::parse("", &[]).expect("valid").trusted_proxies.is_empty(), "none unless named");
    let found = problems("", &[r#"server.trusted_proxies=["0.0.0.0/0", "proxy.example", "::/0"]"#]);
    assert!(found[0].starts_with("server.trusted_proxies[0]: `0.0.0.0/0` is too wide"), "{found:?}");
    assert!(found[1].starts_with("server.trusted_proxies[1]: `proxy.example` is not an IP address"), "{found:?}");
    assert!(found[2].starts_with("server.trusted_proxies[2]: `::/0` is too wide"), "{found:?}");
    let found = problems("", &[r#"server.trusted_proxies=["::ffff:128.0.0.0/97"]"#]);
    assert!(found[0].starts_with("server.trusted_proxies[0]: `::ffff:128.0.0.0/97` is too wide"), "half of IPv4 trusted: {found:?}");
    let found = problems("", &[r#"server.trusted_proxies=["10.10.3.4"]"#]);
    assert_eq!(
        found,
        ["server.trusted_proxies: `10.10.3.4/32` overlaps vpc_cidr `10.10.0.0/16`: code in an instance could name any address as its own"]
    );
}
