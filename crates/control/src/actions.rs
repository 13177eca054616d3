//! The registry of actions: the single list that the router, the Cedar schema, the OpenAPI
//! document and the metrics labels are all built from.

use policy::ResourceKind;

/// What the pipeline must know about an action before running it.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub name: &'static str,
    pub resource: ResourceKind,
    /// CloudTrail's `readOnly`.
    pub read_only: bool,
    /// CloudTrail's `managementEvent`; object reads and writes are data events.
    pub management_event: bool,
    pub summary: &'static str,
}

const fn action(name: &'static str, resource: ResourceKind, read_only: bool, management_event: bool, summary: &'static str) -> ActionSpec {
    ActionSpec { name, resource, read_only, management_event, summary }
}

use ResourceKind::{Bucket, Instance, Key, Object, Parameter, Service, Stack};

pub const ACTIONS: &[ActionSpec] = &[
    action("parameters:PutParameter", Parameter, false, true, "Create or overwrite a parameter (String, StringList, SecureString)"),
    action("parameters:GetParameter", Parameter, true, true, "Read one parameter, decrypted with WithDecryption"),
    action("parameters:GetParameters", Service, true, true, "Read up to 10 parameters"),
    action("parameters:GetParametersByPath", Parameter, true, true, "Read the parameters under a path"),
    action("parameters:DeleteParameter", Parameter, false, true, "Delete a parameter and its history"),
    action("parameters:GetParameterHistory", Parameter, true, true, "Every version of a parameter"),
    action("storage:CreateBucket", Bucket, false, true, "Create a bucket"),
    action("storage:DeleteBucket", Bucket, false, true, "Delete an empty bucket"),
    action("storage:ListBuckets", Service, true, true, "List buckets"),
    action("storage:PutObject", Object, false, false, "Write an object (Body in base64)"),
    action("storage:GetObject", Object, true, false, "Read an object, or a byte range of it"),
    action("storage:HeadObject", Object, true, false, "Read an object's metadata"),
    action("storage:ListObjectsV2", Object, true, false, "List objects by prefix, with delimiter and pagination"),
    action("storage:DeleteObject", Object, false, false, "Delete an object"),
    action("storage:CopyObject", Object, false, false, "Copy an object"),
    action("storage:PutBucketNotificationConfiguration", Bucket, false, true, "Replace a bucket's notification configuration"),
    action("storage:GetBucketNotificationConfiguration", Bucket, true, true, "Read a bucket's notification configuration"),
    action("keys:CreateKey", Service, false, true, "Create a symmetric key"),
    action("keys:DescribeKey", Key, true, true, "Describe a key"),
    action("keys:ListKeys", Service, true, true, "List keys"),
    action("keys:CreateAlias", Key, false, true, "Name a key"),
    action("keys:ListAliases", Service, true, true, "List aliases"),
    action("keys:EnableKeyRotation", Key, false, true, "Rotate a key's material periodically"),
    action("keys:DisableKeyRotation", Key, false, true, "Stop periodic rotation"),
    action("keys:GetKeyRotationStatus", Key, true, true, "Whether a key rotates"),
    action("keys:RotateKeyOnDemand", Key, false, true, "Rotate a key's material now"),
    action("keys:GenerateDataKey", Key, false, true, "A fresh data key, in plaintext and wrapped"),
    action("keys:Encrypt", Key, false, true, "Encrypt up to 4096 bytes"),
    action("keys:Decrypt", Key, false, true, "Decrypt a ciphertext blob"),
    action("keys:ScheduleKeyDeletion", Key, false, true, "Delete a key after 7 to 30 days"),
    action("keys:CancelKeyDeletion", Key, false, true, "Cancel a scheduled deletion (the key comes back disabled)"),
    action("keys:EnableKey", Key, false, true, "Allow a key's use"),
    action("keys:DisableKey", Key, false, true, "Stop a key's use without deleting it"),
    action("streaming:CreateInstance", Service, false, true, "Start a sandbox instance from an image, optionally for a user"),
    action("streaming:DescribeInstances", Service, true, true, "List sandbox instances"),
    action("streaming:TerminateInstance", Instance, false, true, "Stop an instance and remove everything it had on the host"),
    action("streaming:ExecInInstance", Instance, false, true, "Run a command in an instance as its workspace user (break-glass)"),
    action("streaming:CreateFleet", Service, false, true, "Create a fleet (STOPPED until StartFleet)"),
    action(
        "streaming:UpdateFleet",
        Service,
        false,
        true,
        "Change a fleet; running instances of an older image or type are replaced as sessions end",
    ),
    action("streaming:DeleteFleet", Service, false, true, "Delete a stopped fleet that no stack uses"),
    action("streaming:DescribeFleets", Service, true, true, "Fleets with their capacity counters"),
    action("streaming:StartFleet", Service, false, true, "Start a fleet"),
    action("streaming:StopFleet", Service, false, true, "Stop a fleet, ending its sessions"),
    action("streaming:CreateStack", Service, false, true, "Create a stack: user settings, home folders, redirect URL"),
    action("streaming:UpdateStack", Service, false, true, "Change a stack; running sessions keep the settings they started with"),
    action("streaming:DeleteStack", Service, false, true, "Delete a stack"),
    action("streaming:DescribeStacks", Service, true, true, "Stacks with their settings"),
    action("streaming:AssociateFleet", Service, false, true, "Let a stack stream from a fleet"),
    action("streaming:DisassociateFleet", Service, false, true, "Detach a fleet from a stack"),
    action("streaming:CreateStreamingURL", Service, false, true, "A signed, single-use URL that opens a session for a user"),
    action("streaming:RedeemStreamingURL", Service, false, true, "Open a streaming URL: a session, queued for an instance"),
    action("streaming:DescribeSessions", Service, true, true, "A stack and fleet's PENDING and ACTIVE sessions, paginated"),
    action("streaming:ExpireSession", Service, false, true, "End a session now"),
    action("streaming:GetSessionStatus", Service, true, true, "The caller's own session: state, queue position, warnings"),
    action(
        "notebooks:CreateNotebookInstance",
        Service,
        false,
        true,
        "Create a notebook instance (Jupyter in its own sandbox, encrypted volume) and start it",
    ),
    action("notebooks:DescribeNotebookInstance", Service, true, true, "A notebook instance and its status"),
    action("notebooks:ListNotebookInstances", Service, true, true, "Every notebook instance"),
    action("notebooks:StartNotebookInstance", Service, false, true, "Start a stopped notebook instance"),
    action("notebooks:StopNotebookInstance", Service, false, true, "Stop a notebook instance: access ends, its volume is locked"),
    action("notebooks:UpdateNotebookInstance", Service, false, true, "Change a stopped notebook's instance type or grow its volume"),
    action("notebooks:DeleteNotebookInstance", Service, false, true, "Delete a stopped notebook instance and its volume"),
    action(
        "notebooks:CreatePresignedNotebookInstanceUrl",
        Service,
        false,
        true,
        "A 5-minute, single-use URL to a notebook, bound to one streaming session",
    ),
    action("notebooks:RedeemPresignedNotebookInstanceUrl", Service, false, true, "Open a presigned notebook URL in its session's browser"),
    action(
        "deploy:Diff",
        Service,
        true,
        true,
        "Compare a spec with the deployed environment: each resource's create, update, replace or delete",
    ),
    action("deploy:Deploy", Service, false, true, "Apply a spec stack by stack, rolling back on failure"),
    action("deploy:Destroy", Service, false, true, "Delete the deployed resources in reverse order, keeping retained ones"),
    action("deploy:DescribeStackEvents", Service, true, true, "The events of a deployment, to follow it while it runs"),
    action("deploy:DescribeStacks", Service, true, true, "The stacks with their status, resources and outputs"),
    action("identity:CreateSessionToken", Service, false, true, "A short-lived bearer token for a user"),
    action("identity:GetCallerIdentity", Service, true, true, "Who the caller is"),
    action("streaming:BatchAssociateUserStack", Service, false, true, "Let users (USERPOOL, SAML) launch stacks from the portal"),
    action("streaming:BatchDisassociateUserStack", Service, false, true, "Take stacks away from portal users"),
    action("streaming:DescribeUserStackAssociations", Service, true, true, "Which users may launch which stacks (a user: their own)"),
    action(
        "streaming:CreateUserStreamingURL",
        Stack,
        false,
        true,
        "A signed-in user's own streaming URL for a stack they are associated with (SAML: their role permits)",
    ),
    action("streaming:DescribeUserSessions", Service, true, true, "A signed-in user's own sessions, with what operators ran in them"),
    action(
        "identity:AssumeRoleWithSAML",
        Service,
        false,
        true,
        "A SAML user's sign-in (a verified assertion posted to /saml/acs): a bearer token with the roles it grants",
    ),
    action(
        "identity:AssumeRoleWithWebIdentity",
        Service,
        false,
        true,
        "An OpenID Connect user's sign-in (code with PKCE, ID token verified at /oidc/callback): a bearer token",
    ),
    action("identity:SignIn", Service, false, true, "A local user's sign-in (password, and TOTP code once enrolled): a bearer token"),
    action("identity:CreateLocalUser", Service, false, true, "A local user (argon2id password) for small sites"),
    action("identity:DeleteLocalUser", Service, false, true, "Delete a local user"),
    action("identity:UnlockLocalUser", Service, false, true, "Clear a local user's lock after failed sign-ins"),
    action("identity:AssociateSoftwareToken", Service, false, true, "Start enrolling a TOTP device: a new secret, pending"),
    action("identity:VerifySoftwareToken", Service, false, true, "Finish enrolling a TOTP device with a code from it"),
    action("audit:LookupEvents", Service, true, true, "Search the audit trail (CloudTrail's attributes plus CorrelationId), newest first"),
    action("audit:Query", Service, true, true, "Run one read-only SQL SELECT over the audit index"),
    action("audit:Trace", Service, true, true, "One person's, session's or correlation's actions, in order"),
    action("audit:ValidateTrail", Service, true, true, "Check the trail's digests, logs and checkpoints (what `audit validate` does)"),
    action("audit:Reindex", Service, false, true, "Rebuild the audit index from the trail's files"),
    action(
        "audit:GenerateUsageReports",
        Service,
        false,
        true,
        "Write a day's AppStream-style session and application reports to the reports bucket",
    ),
];

pub fn find(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn declarations() -> Vec<policy::ActionDecl> {
    ACTIONS.iter().map(|a| policy::ActionDecl { name: a.name.to_owned(), resource: a.resource }).collect()
}
