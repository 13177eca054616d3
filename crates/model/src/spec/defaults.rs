//! The embedded defaults: the spec written on a fresh host, the instance types and the
//! least-privilege policies.

/// AppStream-like instance types: name, vCPUs, memory in MiB. They become cgroup limits.
pub(super) const INSTANCE_TYPES: &[(&str, u32, u64)] = &[
    ("stream.standard.small", 2, 4096),
    ("stream.standard.medium", 2, 8192),
    ("stream.standard.large", 4, 16384),
    ("stream.compute.large", 2, 3840),
    ("stream.memory.large", 2, 15616),
];

/// The default policies: least privilege. Everything not permitted here is denied.
pub(super) const POLICIES: &[(&str, &str)] = &[
    (
        "operator-admin",
        r#"// The local operator, authenticated by peer credentials on the control socket.
permit (principal is DataSandbox::Operator, action, resource);"#,
    ),
    (
        "admin-role",
        r#"// Remote operators hold the admin role.
permit (principal in DataSandbox::Role::"admin", action, resource);"#,
    ),
    (
        "home-folder-owner",
        r#"// A user reaches only their own home folder, and only through the channels that apply the
// stack's file-transfer settings: the instance serving their session (the files stay in the
// workspace), their session's My Files (which checks FILE_UPLOAD and FILE_DOWNLOAD), or a
// token an operator issued to an application. A sign-in's bearer token (identity:SignIn, the
// portal, SAML, OIDC) from the user's own device does not, or it would bypass those settings.
permit (
  principal is DataSandbox::User,
  action in [
    DataSandbox::Action::"storage:GetObject",
    DataSandbox::Action::"storage:HeadObject",
    DataSandbox::Action::"storage:PutObject",
    DataSandbox::Action::"storage:DeleteObject",
    DataSandbox::Action::"storage:CopyObject",
    DataSandbox::Action::"storage:ListObjectsV2"
  ],
  resource is DataSandbox::Object
) when {
  resource has home && resource.home == principal.home &&
  (principal.channel == "instance" || principal.channel == "session" || principal.channel == "issued-token")
};"#,
    ),
    (
        "airlock-researchers",
        r#"// Every user may ask for files to leave or enter a workspace, and follow their own requests;
// the airlock itself keeps each request its researcher's and keeps researchers from
// reviewing, releasing or revoking their own.
permit (
  principal is DataSandbox::User,
  action in [
    DataSandbox::Action::"airlock:CreateRequest",
    DataSandbox::Action::"airlock:AddFile",
    DataSandbox::Action::"airlock:RemoveFile",
    DataSandbox::Action::"airlock:SubmitRequest",
    DataSandbox::Action::"airlock:WithdrawRequest",
    DataSandbox::Action::"airlock:DescribeRequests",
    DataSandbox::Action::"airlock:CreateDownloadUrl",
    DataSandbox::Action::"airlock:DownloadFile",
    DataSandbox::Action::"airlock:GetImports"
  ],
  resource is DataSandbox::Service
);"#,
    ),
    (
        "airlock-reviewers",
        r#"// Reviewers vote on, release and revoke others' requests; auditors only read.
permit (
  principal in DataSandbox::Role::"reviewer",
  action in [
    DataSandbox::Action::"airlock:DescribeReviewQueue",
    DataSandbox::Action::"airlock:CastVote",
    DataSandbox::Action::"airlock:ReleaseRequest",
    DataSandbox::Action::"airlock:RevokeRequest",
    DataSandbox::Action::"airlock:GetReleaseRecord",
    DataSandbox::Action::"airlock:PreviewFile"
  ],
  resource is DataSandbox::Service
);
permit (
  principal in DataSandbox::Role::"auditor",
  action in [
    DataSandbox::Action::"airlock:DescribeReviewQueue",
    DataSandbox::Action::"airlock:GetReleaseRecord",
    DataSandbox::Action::"airlock:PreviewFile"
  ],
  resource is DataSandbox::Service
);"#,
    ),
    (
        "airlock-bucket-sealed",
        r#"// The airlock's copies are reached through its actions only: not by instances, users,
// admins or the operator, with any storage action.
forbid (principal, action, resource in DataSandbox::Bucket::"datasandbox-airlock");"#,
    ),
    (
        "recordings-auditors",
        r#"// Session recordings are watched, exported and listed by auditors only: not by the
// recorded user, other analysts, admins or the operator (who may grant the auditor role, a
// grant that is itself on the record). Playing or exporting a segment needs a justification,
// kept in the trail with the call.
permit (
  principal in DataSandbox::Role::"auditor",
  action in [
    DataSandbox::Action::"streaming:DescribeRecordings",
    DataSandbox::Action::"streaming:PlayRecordingSegment",
    DataSandbox::Action::"streaming:ExportRecordingSegment"
  ],
  resource is DataSandbox::Service
);
forbid (
  principal,
  action in [
    DataSandbox::Action::"streaming:DescribeRecordings",
    DataSandbox::Action::"streaming:PlayRecordingSegment",
    DataSandbox::Action::"streaming:ExportRecordingSegment"
  ],
  resource
) unless { principal in DataSandbox::Role::"auditor" };
// The segments themselves are reached through those actions only, and the key that wraps
// their data keys is the platform's alone: nobody decrypts, disables, deletes or re-points it.
forbid (principal, action, resource in DataSandbox::Bucket::"datasandbox-recordings");
forbid (principal, action, resource is DataSandbox::Key) when { resource.aliases.contains("alias/datasandbox/recordings") };"#,
    ),
    (
        "streaming-url-holders",
        r#"// Whoever opens a valid streaming URL becomes its user and may redeem it, once.
permit (
  principal is DataSandbox::User,
  action in [DataSandbox::Action::"streaming:RedeemStreamingURL", DataSandbox::Action::"notebooks:RedeemPresignedNotebookInstanceUrl"],
  resource is DataSandbox::Service
);"#,
    ),
    (
        "function-session-validator",
        r#"// The session validator reads launchers' session files in the home folders of buckets whose
// notifications invoke it and answers beside them, looks the session up, and readies and presigns the user's notebook, whose volume key
// is the notebook key (alias/notebook-kms, resolved when the policy is loaded); nothing else.
permit (
  principal == DataSandbox::Function::"session-validator",
  action == DataSandbox::Action::"storage:GetObject",
  resource is DataSandbox::Object
) when { resource.notifies.contains("session-validator") && resource has home && resource.key like "user/*/session.json" };
permit (
  principal == DataSandbox::Function::"session-validator",
  action == DataSandbox::Action::"storage:PutObject",
  resource is DataSandbox::Object
) when {
  resource.notifies.contains("session-validator") && resource has home &&
  (resource.key like "user/*/session_url.txt" || resource.key like "user/*/session_error.json")
};
permit (
  principal == DataSandbox::Function::"session-validator",
  action in [
    DataSandbox::Action::"streaming:DescribeSessions",
    DataSandbox::Action::"notebooks:DescribeNotebookInstance",
    DataSandbox::Action::"notebooks:CreateNotebookInstance",
    DataSandbox::Action::"notebooks:StartNotebookInstance",
    DataSandbox::Action::"notebooks:CreatePresignedNotebookInstanceUrl"
  ],
  resource is DataSandbox::Service
);
permit (
  principal == DataSandbox::Function::"session-validator",
  action in [DataSandbox::Action::"keys:GenerateDataKey", DataSandbox::Action::"keys:Decrypt"],
  resource is DataSandbox::Key
) when { resource.aliases.contains("alias/notebook-kms") };"#,
    ),
    (
        "function-usage-reports",
        r#"// The usage-reports function writes the daily AppStream-style reports, and nothing else.
permit (
  principal == DataSandbox::Function::"usage-reports",
  action == DataSandbox::Action::"audit:GenerateUsageReports",
  resource is DataSandbox::Service
);
permit (
  principal == DataSandbox::Function::"usage-reports",
  action == DataSandbox::Action::"storage:PutObject",
  resource is DataSandbox::Object
) when { resource.key like "sessions/schedule=DAILY/*" || resource.key like "applications/schedule=DAILY/*" };"#,
    ),
    (
        "saml-stack",
        r#"// The seed's saml-stack role: a user signed in through the SAML identity provider with
// this role streams stacks as themselves only (AppStream's condition appstream:userId =
// saml:sub). Add `&& resource.name == "<stack>"` to grant fewer stacks.
permit (
  principal is DataSandbox::User in DataSandbox::Role::"saml-stack",
  action == DataSandbox::Action::"streaming:CreateUserStreamingURL",
  resource is DataSandbox::Stack
) when { resource.user == principal };"#,
    ),
    (
        "launcher-configuration",
        r#"// Launchers (acting for their user) read their configuration from the parameter store.
permit (
  principal is DataSandbox::User,
  action == DataSandbox::Action::"parameters:GetParameter",
  resource is DataSandbox::Parameter
) when { resource.name like "/datasandbox/launcher/*" };"#,
    ),
    (
        "function-sha256-sidecar",
        r#"// The built-in sha256-sidecar function reads the object it was notified of and writes
// its checksum beside it, only in buckets whose notifications invoke it; nothing else.
permit (
  principal == DataSandbox::Function::"sha256-sidecar",
  action == DataSandbox::Action::"storage:GetObject",
  resource is DataSandbox::Object
) when { resource.notifies.contains("sha256-sidecar") };
permit (
  principal == DataSandbox::Function::"sha256-sidecar",
  action == DataSandbox::Action::"storage:PutObject",
  resource is DataSandbox::Object
) when { resource.notifies.contains("sha256-sidecar") && resource.key like "*.sha256" };"#,
    ),
];

const DEFAULT_SPEC_HEADER: &str = r#"# DataSandbox environment spec.
#
# The parameters below are the seed's `cdk.json` context with the sample's defaults. Any of
# them, and any nested key, can be overridden for one run with `-c key=value`, for example
# `datasandbox up -c fleet_type=ALWAYS_ON -c storage.max_object_size=1048576`.

vpc_cidr = "10.10.0.0/16"
image_name = "datasandbox-image"
environment_name = "datasandbox"
instance_type = "stream.standard.small"
fleet_type = "ON_DEMAND"
stream_view = "DESKTOP"
idp_name = "idp_sample"
# SAML sign-in: the identity provider's metadata, a file or an http(s) URL. Its users need the
# AppStream attribute https://aws.amazon.com/SAML/Attributes/Role with the value
# "arn:datasandbox:identity::<account_id>:role/saml-stack,arn:datasandbox:identity::<account_id>:saml-provider/<idp_name>".
# idp_metadata = "/path/to/idp-metadata.xml"
account_id = "000000000000"
region = "local"

[server]
api_listen = "127.0.0.1:8750"
# Plain HTTP is served on loopback only. Beyond it, give a certificate chain and its key (PEM,
# read again on SIGHUP), or an https:// public_url alone (a local authority in the data
# directory issues the certificate), or allow_plain_http = true behind a TLS proxy.
# public_url = "https://sandbox.example.org"
# notebook_url = "https://nb.sandbox.example.org"
# tls_cert = "/etc/datasandbox/fullchain.pem"
# tls_key = "/etc/datasandbox/key.pem"
# Behind a proxy, its addresses (only the proxy may connect from them): the client it names
# in X-Forwarded-For is then the address recorded and the one sign-in limits count, rather
# than the proxy's for everyone.
# trusted_proxies = ["192.0.2.10"]

# OpenID Connect sign-in (authorization code with PKCE); register <public URL>/oidc/callback
# as the client's redirect URI at the provider.
# [oidc]
# issuer = "https://login.example.org"
# client_id = "datasandbox"
# scopes = "openid email roles"
# user_claim = "sub"        # a claim whose values are 2-32 of [A-Za-z0-9_+=,.@-]
# roles_claim = "roles"
# session_seconds = 3600     # 900-43200: the sign-in, and the sessions it launches, last this long

[storage]
# "local" keeps objects under the data directory; "s3" uses any S3-compatible server:
# backend = "s3"
# [storage.s3]
# endpoint = "http://127.0.0.1:9000"
# bucket = "datasandbox"
# allow_http = true
backend = "local"
max_object_size = 33554432

# [metadata]
# url = "postgres://datasandbox@localhost/datasandbox"   # default: SQLite in the data directory

# Several nodes share one PostgreSQL metadata store and one S3 bucket; each has a name of its own
# (`serve --node` overrides it) and renews a lease in the store.
# [cluster]
# node = "node-a"            # default: the host's name
# heartbeat_ms = 5000
# lease_ms = 15000

# Buckets default to one home-folder bucket named `<environment_name>-home`. Declaring
# [[buckets]] replaces that default:
# [[buckets]]
# name = "datasandbox-home"
# home_folders = true
# [[buckets.notifications]]
# id = "checksums"
# events = ["ObjectCreated:*"]
# suffix = ".csv"
# function = "sha256-sidecar"

# Fleets, stacks and notebooks default to `<environment_name>-fleet`, `<environment_name>-stack`
# and `Data-Sandbox-Notebook`, built from the parameters above.

# Cedar policies. Anything they do not permit is denied. Omitting [[policies]] entirely
# installs these same defaults.
"#;

/// The spec that `datasandbox up` writes on a fresh host: the parameters and the default policies.
pub fn default_spec_text() -> String {
    let mut text = DEFAULT_SPEC_HEADER.to_owned();
    for (name, policy) in POLICIES {
        text.push_str(&format!("\n[[policies]]\nname = \"{name}\"\ntext = '''\n{policy}'''\n"));
    }
    text
}
