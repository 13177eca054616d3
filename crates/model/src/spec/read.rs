//! Reading the whole spec: the top-level settings and the platform's tables (`oidc`, `server`,
//! `streaming`, `metadata`, `storage`, `audit`, `cluster`, `sandbox`, `launcher`), then the resource
//! tables. Tables are read in the order below, so problems are reported in the file's order.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::resources::{
    read_buckets, read_datasets, read_fleets, read_images, read_instance_types, read_notebooks, read_policies, read_stacks,
};
use super::validated::{
    AirlockSpec, AuditSpec, ClusterSpec, FleetType, Ipv4Cidr, LauncherSpec, OidcSpec, RecordingSpec, ServerTls, Spec, StorageBackend,
    StreamView,
};
use super::walk::Table;

/// The address the API listens on when the spec names none.
const DEFAULT_API_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8750);

pub(super) fn read_spec(root: &Table) -> Spec {
    let environment_name = read_environment_name(root);
    let vpc_cidr = root.parsed("vpc_cidr", "10.10.0.0/16", Ipv4Cidr::parse_private);
    let image_name = root.string("image_name", "datasandbox-image");
    let fleet_type = match root.choice("fleet_type", "ON_DEMAND", &["ALWAYS_ON", "ON_DEMAND"]) {
        "ALWAYS_ON" => FleetType::AlwaysOn,
        _ => FleetType::OnDemand,
    };
    let stream_view = match root.choice("stream_view", "DESKTOP", &["DESKTOP", "APP", "DIRECT"]) {
        "APP" => StreamView::App,
        "DIRECT" => StreamView::Direct,
        _ => StreamView::Desktop,
    };
    let idp_name = root.string("idp_name", "idp_sample");
    let idp_metadata = root.opt_string("idp_metadata").filter(|v| !v.is_empty());
    let account_id = read_account_id(root);
    let region = root.string("region", "local");
    let oidc = read_oidc(root);
    let server = read_server(root, vpc_cidr);
    let timeout_scale_ms = read_timeout_scale(root);
    let metadata_url = read_metadata_url(root);
    let (storage, max_object_size) = read_storage(root);
    let audit = read_audit(root);
    let recording = read_recording(root, &audit);
    let cluster = read_cluster(root);
    let sandbox = read_sandbox(root);
    let instance_types = read_instance_types(root);
    let buckets = read_buckets(root, &environment_name);
    let datasets = read_datasets(root, &buckets);
    let images = read_images(root, &image_name, stream_view);
    let policies = read_policies(root);
    let fleets = read_fleets(root, &environment_name, &image_name, fleet_type, &instance_types);
    let stacks = read_stacks(root, &environment_name, stream_view, &fleets, &buckets);
    let (notebooks, launcher, airlock) = (read_notebooks(root, &instance_types), read_launcher(root), read_airlock(root));
    root.finish();

    Spec {
        vpc_cidr: vpc_cidr.unwrap_or(Ipv4Cidr { address: Ipv4Addr::new(10, 10, 0, 0), prefix_len: 16 }),
        image_name,
        instance_type: root.string("instance_type", "stream.standard.small"),
        environment_name,
        fleet_type,
        stream_view,
        idp_name,
        idp_metadata,
        oidc,
        account_id,
        region,
        notebook_listen: server.notebook_listen,
        notebook_url: server.notebook_url,
        api_listen: server.api_listen,
        public_url: server.public_url,
        tls: server.tls,
        trusted_proxies: server.trusted_proxies,
        timeout_scale_ms,
        metadata_url,
        storage,
        max_object_size,
        audit,
        recording,
        cluster,
        endpoint_port: sandbox.endpoint_port,
        credential_lifetime_seconds: sandbox.credential_lifetime_seconds,
        id_base: sandbox.id_base,
        id_slots: sandbox.id_slots,
        instance_types,
        buckets,
        datasets,
        images,
        policies,
        fleets,
        stacks,
        notebooks,
        launcher,
        airlock,
    }
}

fn read_account_id(root: &Table) -> String {
    root.parsed("account_id", "000000000000", |v| {
        if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) { Ok(v.to_owned()) } else { Err(format!("`{v}` must be 12 digits")) }
    })
    .unwrap_or_default()
}

/// `[streaming] timeout_scale_ms`: how long a second of a session timeout lasts (tests shorten it).
fn read_timeout_scale(root: &Table) -> u32 {
    let streaming = root.table("streaming");
    let timeout_scale_ms = streaming.integer("timeout_scale_ms", 1000, 1..=1000) as u32;
    streaming.finish();
    timeout_scale_ms
}

/// The file types the airlock lets through unless told otherwise.
const AIRLOCK_TYPES: &[&str] = &["csv", "tsv", "text", "markdown", "json", "png", "pdf"];
/// The file types the airlock knows by content: ZIP archives too, checked member by member,
/// when the operator allows them.
const AIRLOCK_KNOWN_TYPES: &[&str] = &["csv", "tsv", "text", "markdown", "json", "png", "pdf", "zip"];

/// `[airlock]`: at least one reviewer per direction; only types the checks know.
fn read_airlock(root: &Table) -> AirlockSpec {
    let airlock = root.table("airlock");
    let export_reviewers = airlock.integer("export_reviewers", 2, 1..=10) as u32;
    let import_reviewers = airlock.integer("import_reviewers", 2, 1..=10) as u32;
    let small_count_threshold = airlock.integer("small_count_threshold", 10, 2..=1000) as u64;
    let allowed_types = airlock.strings("allowed_types", AIRLOCK_TYPES);
    for unknown in allowed_types.iter().filter(|t| !AIRLOCK_KNOWN_TYPES.contains(&t.as_str())) {
        airlock.problem("allowed_types", format!("`{unknown}` is not a type the checks know ({})", AIRLOCK_KNOWN_TYPES.join(", ")));
    }
    let max_file_bytes = airlock.integer("max_file_bytes", 64 << 20, 1..=(1 << 40)) as u64;
    let max_bytes_per_day = airlock.integer("max_bytes_per_day", 4 << 30, 1..=(1 << 40)) as u64;
    let link_hours = airlock.integer("link_hours", 24, 1..=24 * 30) as u32;
    let release_hours = airlock.integer("release_hours", 24 * 7, 1..=24 * 365) as u32;
    let malware_scan = airlock.choice("malware_scan", "clamav", &["clamav", "off"]) == "clamav";
    let clamav_database = airlock.string("clamav_database", "/var/lib/clamav");
    airlock.finish();
    AirlockSpec {
        export_reviewers,
        import_reviewers,
        small_count_threshold,
        allowed_types,
        max_file_bytes,
        max_bytes_per_day,
        link_hours,
        release_hours,
        malware_scan,
        clamav_database,
    }
}

fn read_environment_name(root: &Table) -> String {
    root.parsed("environment_name", "datasandbox", |v| {
        let ok = (1..=40).contains(&v.len())
            && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if ok { Ok(v.to_owned()) } else { Err(format!("`{v}` must be 1..=40 lower-case letters, digits or inner `-` (it names buckets)")) }
    })
    .unwrap_or_else(|| "datasandbox".into())
}

/// `[oidc]`: absent unless `issuer` is set, and then `client_id` is required too.
fn read_oidc(root: &Table) -> Option<OidcSpec> {
    let oidc_table = root.table("oidc");
    let issuer = oidc_table.string("issuer", "");
    let oidc = if issuer.is_empty() {
        for key in ["client_id", "client_secret", "scopes", "user_claim", "roles_claim", "session_seconds"] {
            oidc_table.has(key);
        }
        None
    } else {
        if !provider_url_allowed(&issuer) || issuer.ends_with('/') {
            oidc_table.problem(
                "issuer",
                format!("`{issuer}` must be an https:// URL without a trailing `/` (http:// only for this host's loopback, as in tests)"),
            );
        }
        let client_id = oidc_table.string("client_id", "");
        if client_id.is_empty() {
            oidc_table.problem("client_id", "is required when oidc.issuer is set");
        }
        let scopes = oidc_table.string("scopes", "openid email");
        if !scopes.split_whitespace().any(|s| s == "openid") {
            oidc_table.problem("scopes", format!("`{scopes}` must include `openid`"));
        }
        Some(OidcSpec {
            issuer,
            client_id,
            client_secret: oidc_table.opt_string("client_secret").filter(|v| !v.is_empty()),
            scopes,
            user_claim: oidc_table.string("user_claim", "sub"),
            roles_claim: oidc_table.string("roles_claim", "roles"),
            session_seconds: oidc_table.integer("session_seconds", 3600, 900..=43_200),
        })
    };
    oidc_table.finish();
    oidc
}

/// Where the server listens and the URLs users reach it at, defaults resolved.
struct ServerSettings {
    api_listen: SocketAddr,
    public_url: Option<String>,
    notebook_listen: SocketAddr,
    notebook_url: Option<String>,
    tls: ServerTls,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[server]`: the notebook origin must differ from the public one, and a public URL needs a
/// notebook URL beside it.
fn read_server(root: &Table, vpc_cidr: Option<Ipv4Cidr>) -> ServerSettings {
    let server = root.table("server");
    let api_listen =
        server.parsed("api_listen", "127.0.0.1:8750", |v| v.parse::<SocketAddr>().map_err(|_| format!("`{v}` is not an address:port")));
    let public_url = server.opt_string("public_url").filter(|v| !v.is_empty());
    if let Some(url) = public_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/')) {
        server.problem("public_url", format!("`{url}` must be an http:// or https:// URL without a trailing `/`"));
    }
    let notebook_listen = server.opt_string("notebook_listen").filter(|v| !v.is_empty()).and_then(|v| match v.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            server.problem("notebook_listen", format!("`{v}` is not an address:port"));
            None
        }
    });
    let notebook_url = server.opt_string("notebook_url").filter(|v| !v.is_empty());
    if let Some(url) = notebook_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/')) {
        server.problem("notebook_url", format!("`{url}` must be an http:// or https:// URL without a trailing `/`"));
    }
    if notebook_url.is_some() && notebook_url == public_url {
        server.problem("notebook_url", "must differ from public_url: notebooks are served from an origin of their own");
    }
    if public_url.is_some() && notebook_url.is_none() {
        server.problem("notebook_url", "is required with public_url: the URL (another host name or port) where notebook_listen is reached");
    }
    let api_listen = api_listen.unwrap_or_else(|| SocketAddr::from(DEFAULT_API_LISTEN));
    // By default notebooks listen on the API's address with the next port (port 0 stays 0).
    let notebook_listen = notebook_listen.unwrap_or_else(|| {
        SocketAddr::new(api_listen.ip(), if api_listen.port() == 0 { 0 } else { api_listen.port().checked_add(1).unwrap_or(0) })
    });
    let tls = read_tls(&server, public_url.as_deref(), [api_listen, notebook_listen]);
    let trusted_proxies = read_trusted_proxies(&server, vpc_cidr);
    server.finish();
    ServerSettings { api_listen, public_url, notebook_listen, notebook_url, tls, trusted_proxies }
}

/// An IPv4-mapped IPv6 network as the IPv4 one it is: peers are compared as IPv4.
fn ipv4_if_mapped(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, ipnet::IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// `trusted_proxies`: addresses (`10.0.0.5`) or networks (`10.0.0.0/24`), none so wide that
/// anyone could name the address their requests are recorded from.
fn read_trusted_proxies(server: &Table, vpc_cidr: Option<Ipv4Cidr>) -> Vec<ipnet::IpNet> {
    let mut proxies = Vec::new();
    for (index, text) in server.strings("trusted_proxies", &[]).iter().enumerate() {
        // IPv4 in IPv6 is judged as the IPv4 network it is (peers are compared as IPv4).
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|n| ipv4_if_mapped(n.trunc()));
        let problem = match parsed {
            Err(_) => format!("`{text}` is not an IP address or a network in CIDR notation (like 10.0.0.5 or 10.0.0.0/24)"),
            Ok(net) if net.prefix_len() < net.max_prefix_len() / 4 => {
                format!("`{text}` is too wide: anyone in it could name the address their requests are recorded from; name the proxies")
            }
            Ok(net) => {
                proxies.push(net);
                continue;
            }
        };
        server.problem(&format!("trusted_proxies[{index}]"), problem);
    }
    if let Some(vpc) = vpc_cidr.and_then(|v| ipnet::Ipv4Net::new(v.address, v.prefix_len).ok()).map(ipnet::IpNet::from)
        && let Some(proxy) = proxies.iter().find(|p| p.contains(&vpc.network()) || vpc.contains(&p.network()))
    {
        server.problem(
            "trusted_proxies",
            format!("`{proxy}` overlaps vpc_cidr `{vpc}`: code in an instance could name any address as its own"),
        );
    }
    proxies
}

/// `tls_cert` and `tls_key` (both or neither); without them an `https://` public URL asks for
/// a certificate of a local authority, and plain HTTP is served on loopback only unless the
/// operator allows it (behind a proxy that terminates TLS).
fn read_tls(server: &Table, public_url: Option<&str>, listeners: [SocketAddr; 2]) -> ServerTls {
    let cert = server.opt_string("tls_cert").filter(|v| !v.is_empty()).map(PathBuf::from);
    let key = server.opt_string("tls_key").filter(|v| !v.is_empty()).map(PathBuf::from);
    let allow_plain = server.boolean("allow_plain_http", false);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => ServerTls::Files { cert, key },
        (None, None) if !allow_plain && public_url.is_some_and(|u| u.starts_with("https://")) => ServerTls::LocalAuthority,
        (None, None) => ServerTls::Off,
        (Some(_), None) | (None, Some(_)) => {
            server.problem("tls_key", "tls_cert and tls_key go together: give both (PEM files) or neither");
            ServerTls::Off
        }
    };
    if tls == ServerTls::Off && !allow_plain {
        for (key, address) in ["api_listen", "notebook_listen"].into_iter().zip(listeners) {
            if !address.ip().is_loopback() {
                server.problem(
                    key,
                    format!(
                        "`{address}` is not a loopback address, and plain HTTP is served on loopback only: give tls_cert and tls_key, \
                         or an https:// public_url (a local authority's certificate is made), or set allow_plain_http = true \
                         behind a proxy that terminates TLS"
                    ),
                );
            }
        }
    }
    tls
}

fn read_metadata_url(root: &Table) -> Option<String> {
    let metadata = root.table("metadata");
    let metadata_url = metadata.opt_string("url").filter(|v| !v.is_empty());
    if let Some(url) =
        metadata_url.as_ref().filter(|u| !(u.starts_with("sqlite:") || u.starts_with("postgres://") || u.starts_with("postgresql://")))
    {
        metadata.problem("url", format!("`{url}` must start with sqlite:, postgres:// or postgresql://"));
    }
    metadata.finish();
    metadata_url
}

/// `[storage]`: the backend and the largest object it accepts.
fn read_storage(root: &Table) -> (StorageBackend, u64) {
    let storage = root.table("storage");
    let backend = storage.choice("backend", "local", &["local", "s3"]);
    let max_object_size = storage.integer("max_object_size", 32 * 1024 * 1024, 1..=5 * 1024 * 1024 * 1024) as u64;
    let s3 = storage.table("s3");
    let storage_backend = if backend == "s3" {
        let endpoint = s3.string("endpoint", "");
        let bucket = s3.string("bucket", "");
        if endpoint.is_empty() {
            s3.problem("endpoint", "is required when storage.backend = \"s3\"");
        }
        if bucket.is_empty() {
            s3.problem("bucket", "is required when storage.backend = \"s3\"");
        }
        StorageBackend::S3 { endpoint, bucket, region: s3.string("region", "us-east-1"), allow_http: s3.boolean("allow_http", false) }
    } else {
        for key in ["endpoint", "bucket", "region", "allow_http"] {
            s3.has(key);
        }
        StorageBackend::Local
    };
    s3.finish();
    storage.finish();
    (storage_backend, max_object_size)
}

fn read_audit(root: &Table) -> AuditSpec {
    let audit = root.table("audit");
    let audit_spec = AuditSpec {
        max_batch_delay_ms: audit.integer("max_batch_delay_ms", 0, 0..=1000) as u64,
        checkpoint_records: audit.integer("checkpoint_records", 1000, 1..=1_000_000) as u64,
        checkpoint_interval_ms: audit.integer("checkpoint_interval_ms", 500, 10..=1000) as u64,
        rotate_bytes: audit.integer("rotate_bytes", 32 * 1024 * 1024, 64 * 1024..=1024 * 1024 * 1024) as u64,
        rotate_interval_seconds: audit.integer("rotate_interval_seconds", 300, 1..=3600) as u64,
        digest_interval_seconds: audit.integer("digest_interval_seconds", 3600, 1..=3600) as u64,
        reserve_bytes: audit.integer("reserve_bytes", 16 * 1024 * 1024, 1024 * 1024..=1024 * 1024 * 1024) as u64,
        witness: audit.opt_string("witness").filter(|w| !w.is_empty()).map(PathBuf::from),
    };
    if let Some(witness) = &audit_spec.witness {
        if !witness.is_absolute() {
            audit.problem("witness", format!("`{}` must be an absolute path (a directory on another file system)", witness.display()));
        } else if witness.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            audit.problem("witness", format!("`{}` must not contain `..`", witness.display()));
        }
    }
    audit.finish();
    audit_spec
}

/// `[recording]`: the free-space floor above the trail's own (a quarter of its reserve), or it
/// would not keep recordings from stopping the trail.
fn read_recording(root: &Table, audit: &AuditSpec) -> RecordingSpec {
    let recording = root.table("recording");
    let spec = RecordingSpec {
        max_session_bytes: recording.integer("max_session_bytes", 8 << 30, 1 << 16..=1 << 42) as u64,
        max_user_bytes_per_day: recording.integer("max_user_bytes_per_day", 32 << 30, 1 << 16..=1 << 44) as u64,
        min_free_bytes: recording.integer("min_free_bytes", 1 << 30, 64 << 20..=1 << 42) as u64,
    };
    if spec.min_free_bytes <= audit.reserve_bytes / 4 {
        let floor = audit.reserve_bytes / 4;
        recording.problem(
            "min_free_bytes",
            format!("must be above a quarter of audit.reserve_bytes ({floor}), where the trail counts the disk as full"),
        );
    }
    recording.finish();
    spec
}

/// `[cluster]`: a lease must outlast at least two missed renewals, so that one slow renewal
/// never loses a node.
fn read_cluster(root: &Table) -> ClusterSpec {
    let cluster = root.table("cluster");
    let node = cluster.opt_string("node").filter(|v| !v.is_empty());
    if let Some(name) = node.as_ref().filter(|n| !is_node_name(n)) {
        cluster.problem("node", format!("`{name}` must be 1..=63 lower-case letters, digits or inner `-`"));
    }
    let heartbeat_ms = cluster.integer("heartbeat_ms", 5000, 100..=60_000) as u64;
    let lease_ms = cluster.integer("lease_ms", 15_000, 300..=600_000) as u64;
    if lease_ms < 3 * heartbeat_ms {
        cluster.problem("lease_ms", format!("{lease_ms} must be at least three heartbeats ({} ms)", 3 * heartbeat_ms));
    }
    let relay_listen = cluster.opt_string("relay_listen").filter(|v| !v.is_empty()).and_then(|v| match v.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            cluster.problem("relay_listen", format!("`{v}` is not an address:port"));
            None
        }
    });
    let relay_address = cluster.opt_string("relay_address").filter(|v| !v.is_empty());
    if let Some(address) = relay_address.as_ref().filter(|a| !is_host_port(a)) {
        cluster.problem("relay_address", format!("`{address}` must be host:port"));
    }
    cluster.finish();
    ClusterSpec { node, heartbeat_ms, lease_ms, relay_listen, relay_address }
}

/// `host:port` with a host name or address and a port number.
fn is_host_port(value: &str) -> bool {
    value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && !host.contains(['/', '@', ' ']) && port.parse::<u16>().is_ok_and(|p| p != 0))
}

/// Whether an identity provider may be reached at `url`: over HTTPS, or over plain HTTP on
/// this host's loopback only (a test's provider). Over plain HTTP elsewhere, whoever is on the
/// path serves their own keys and signs in as anyone (review finding: the issuer's check let
/// `http://` through, though its message asked for https).
pub fn provider_url_allowed(url: &str) -> bool {
    if url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://")) {
        return true;
    }
    let Some(rest) = url.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case("http://")).map(|_| &url[7..]) else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A node's name: it appears in trail paths, ARNs and host names.
pub fn is_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `[sandbox]`'s settings, which the spec carries as top-level fields.
struct SandboxSettings {
    endpoint_port: u16,
    credential_lifetime_seconds: u64,
    id_base: u32,
    id_slots: u32,
}

fn read_sandbox(root: &Table) -> SandboxSettings {
    let sandbox = root.table("sandbox");
    let endpoint_port = sandbox.integer("endpoint_port", 8751, 1024..=65535) as u16;
    let credential_lifetime_seconds = sandbox.integer("credential_lifetime_seconds", 3600, 3..=86_400) as u64;
    // The pool ends 65536 ids below 2^31: gocryptfs (notebook volumes) takes a file owner below
    // 2^31 only, and the last ids are image builds' own.
    let id_base = sandbox.integer("id_base", 1 << 30, 65_536..=(1 << 31) - 131_072) as u32;
    let id_slots = sandbox.integer("id_slots", 16_383, 1..=32_766) as u32;
    if u64::from(id_base) + u64::from(id_slots) * 65_536 > (1 << 31) - 65_536 {
        sandbox.problem(
            "id_slots",
            format!(
                "{id_slots} ranges of 65536 ids from id_base {id_base} end past host id 2147418111 (the ids above are a notebook volume's limit and image builds' own)"
            ),
        );
    }
    sandbox.finish();
    SandboxSettings { endpoint_port, credential_lifetime_seconds, id_base, id_slots }
}

fn read_launcher(root: &Table) -> LauncherSpec {
    let launcher_table = root.table("launcher");
    let launcher = LauncherSpec {
        timeout_seconds: launcher_table.integer("timeout_seconds", 300, 1..=3600) as u64,
        poll_milliseconds: launcher_table.integer("poll_milliseconds", 10, 10..=10_000) as u64,
    };
    launcher_table.finish();
    launcher
}
