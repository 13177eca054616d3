//! The registry of actions: the single list that the router, the Cedar schema, the OpenAPI
//! document and the metrics labels are all built from.

use policy::ResourceKind;

/// What the pipeline must know about an action before running it.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub name: &'static str,
    /// The variant its service's dispatcher matches.
    pub action: Action,
    pub resource: ResourceKind,
    /// CloudTrail's `readOnly`.
    pub read_only: bool,
    /// CloudTrail's `managementEvent`; object reads and writes are data events.
    pub management_event: bool,
    pub summary: &'static str,
}

/// Declares each service's closed enum of actions and the one table of them: an action's name
/// is its service's prefix and its variant, so the name a transport sends, the variant a
/// dispatcher matches and the entry the policies see cannot disagree.
macro_rules! registry {
    ($($variant_of:ident($service:ident) $prefix:literal { $($variant:ident($resource:ident, $read_only:literal, $management:literal, $summary:literal),)* })*) => {
        $(
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum $service { $($variant),* }
        )*

        /// Every action, by service: a dispatcher's `match` on it is exhaustive, so every
        /// registered action has a handler and none has two.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action { $($variant_of($service)),* }

        pub const ACTIONS: &[ActionSpec] = &[$($(ActionSpec {
            name: concat!($prefix, ":", stringify!($variant)),
            action: Action::$variant_of($service::$variant),
            resource: ResourceKind::$resource,
            read_only: $read_only,
            management_event: $management,
            summary: $summary,
        },)*)*];
    };
}

registry! {
    Parameters(ParametersAction) "parameters" {
        PutParameter(Parameter, false, true, "Create or overwrite a parameter (String, StringList, SecureString)"),
        GetParameter(Parameter, true, true, "Read one parameter, decrypted with WithDecryption"),
        GetParameters(Service, true, true, "Read up to 10 parameters"),
        GetParametersByPath(Parameter, true, true, "Read the parameters under a path"),
        DeleteParameter(Parameter, false, true, "Delete a parameter and its history"),
        GetParameterHistory(Parameter, true, true, "Every version of a parameter"),
    }
    Storage(StorageAction) "storage" {
        CreateBucket(Bucket, false, true, "Create a bucket"),
        DeleteBucket(Bucket, false, true, "Delete an empty bucket"),
        ListBuckets(Service, true, true, "List buckets"),
        PutObject(Object, false, false, "Write an object (Body in base64)"),
        GetObject(Object, true, false, "Read an object, or a byte range of it"),
        HeadObject(Object, true, false, "Read an object's metadata"),
        ListObjectsV2(Object, true, false, "List objects by prefix, with delimiter and pagination"),
        WaitForChanges(Object, true, false, "Wait (up to 60 s) until the objects under a prefix change: a long poll, not a listing loop"),
        DatasetFileOpened(Object, true, false, "A process in an instance opened a dataset's file: decided as GetObject and recorded (the dataset mount's own)"),
        DatasetFileClosed(Object, true, false, "What a process read through a dataset file it opened, at its close (the dataset mount's own)"),
        DatasetWriteRefused(Object, false, false, "A change tried on a read-only dataset, refused (the dataset mount's own)"),
        DeleteObject(Object, false, false, "Delete an object"),
        CopyObject(Object, false, false, "Copy an object"),
        PutBucketNotificationConfiguration(Bucket, false, true, "Replace a bucket's notification configuration"),
        GetBucketNotificationConfiguration(Bucket, true, true, "Read a bucket's notification configuration"),
    }
    Keys(KeysAction) "keys" {
        CreateKey(Service, false, true, "Create a symmetric key"),
        DescribeKey(Key, true, true, "Describe a key"),
        ListKeys(Service, true, true, "List keys"),
        CreateAlias(Key, false, true, "Name a key"),
        ListAliases(Service, true, true, "List aliases"),
        EnableKeyRotation(Key, false, true, "Rotate a key's material periodically"),
        DisableKeyRotation(Key, false, true, "Stop periodic rotation"),
        GetKeyRotationStatus(Key, true, true, "Whether a key rotates"),
        RotateKeyOnDemand(Key, false, true, "Rotate a key's material now"),
        GenerateDataKey(Key, false, true, "A fresh data key, in plaintext and wrapped"),
        Encrypt(Key, false, true, "Encrypt up to 4096 bytes"),
        Decrypt(Key, false, true, "Decrypt a ciphertext blob"),
        ScheduleKeyDeletion(Key, false, true, "Delete a key after 7 to 30 days"),
        CancelKeyDeletion(Key, false, true, "Cancel a scheduled deletion (the key comes back disabled)"),
        EnableKey(Key, false, true, "Allow a key's use"),
        DisableKey(Key, false, true, "Stop a key's use without deleting it"),
    }
    Streaming(StreamingAction) "streaming" {
        CreateInstance(Service, false, true, "Start a sandbox instance from an image, optionally for a user"),
        DescribeInstances(Service, true, true, "List sandbox instances"),
        TerminateInstance(Instance, false, true, "Stop an instance and remove everything it had on the host"),
        ExecInInstance(Instance, false, true, "Run a command in an instance as its workspace user (break-glass)"),
        CreateFleet(Service, false, true, "Create a fleet (STOPPED until StartFleet)"),
        UpdateFleet(Service, false, true, "Change a fleet; running instances of an older image or type are replaced as sessions end"),
        DeleteFleet(Service, false, true, "Delete a stopped fleet that no stack uses"),
        DescribeFleets(Service, true, true, "Fleets with their capacity counters"),
        StartFleet(Service, false, true, "Start a fleet"),
        StopFleet(Service, false, true, "Stop a fleet, ending its sessions"),
        CreateStack(Service, false, true, "Create a stack: user settings, home folders, redirect URL"),
        UpdateStack(Service, false, true, "Change a stack; running sessions keep the settings they started with"),
        DeleteStack(Service, false, true, "Delete a stack"),
        DescribeStacks(Service, true, true, "Stacks with their settings"),
        AssociateFleet(Service, false, true, "Let a stack stream from a fleet"),
        DisassociateFleet(Service, false, true, "Detach a fleet from a stack"),
        CreateStreamingURL(Service, false, true, "A signed, single-use URL that opens a session for a user"),
        RedeemStreamingURL(Service, false, true, "Open a streaming URL: a session, queued for an instance"),
        DescribeSessions(Service, true, true, "A stack and fleet's PENDING and ACTIVE sessions, paginated"),
        ExpireSession(Service, false, true, "End a session now"),
        GetSessionStatus(Service, true, true, "The caller's own session: state, queue position, warnings"),
        HandOffSession(Service, false, true, "A one-time URL that opens the caller's session on the node that runs its instance"),
        AcceptSessionHandoff(Service, false, true, "Spend a handoff code on the session's node: a new session cookie for that node"),
        BatchAssociateUserStack(Service, false, true, "Let users (USERPOOL, SAML) launch stacks from the portal"),
        BatchDisassociateUserStack(Service, false, true, "Take stacks away from portal users"),
        DescribeUserStackAssociations(Service, true, true, "Which users may launch which stacks (a user: their own)"),
        CreateUserStreamingURL(Stack, false, true, "A signed-in user's own streaming URL for a stack they are associated with (SAML: their role permits)"),
        DescribeUserSessions(Service, true, true, "A signed-in user's own sessions, with what operators ran in them"),
        DescribeRecordings(Service, true, true, "A recorded session's segments: times, sizes and SHA-256 (auditors only)"),
        PlayRecordingSegment(Service, true, true, "What a session's display showed in one segment, decrypted, given a justification (auditors only)"),
        ExportRecordingSegment(Service, true, true, "A recording segment's stored, encrypted bytes, given a justification (auditors only)"),
    }
    Notebooks(NotebooksAction) "notebooks" {
        CreateNotebookInstance(Service, false, true, "Create a notebook instance (Jupyter in its own sandbox, encrypted volume) and start it"),
        DescribeNotebookInstance(Service, true, true, "A notebook instance and its status"),
        ListNotebookInstances(Service, true, true, "Every notebook instance"),
        StartNotebookInstance(Service, false, true, "Start a stopped notebook instance"),
        StopNotebookInstance(Service, false, true, "Stop a notebook instance: access ends, its volume is locked"),
        UpdateNotebookInstance(Service, false, true, "Change a stopped notebook's instance type or grow its volume"),
        DeleteNotebookInstance(Service, false, true, "Delete a stopped notebook instance and its volume"),
        CreatePresignedNotebookInstanceUrl(Service, false, true, "A 5-minute, single-use URL to a notebook, bound to one streaming session"),
        RedeemPresignedNotebookInstanceUrl(Service, false, true, "Open a presigned notebook URL in its session's browser"),
    }
    Deploy(DeployAction) "deploy" {
        Diff(Service, true, true, "Compare a spec with the deployed environment: each resource's create, update, replace or delete"),
        Deploy(Service, false, true, "Apply a spec stack by stack, rolling back on failure"),
        Destroy(Service, false, true, "Delete the deployed resources in reverse order, keeping retained ones"),
        DescribeStackEvents(Service, true, true, "The events of a deployment, to follow it while it runs"),
        DescribeStacks(Service, true, true, "The stacks with their status, resources and outputs"),
    }
    Identity(IdentityAction) "identity" {
        CreateSessionToken(Service, false, true, "A short-lived bearer token for a user"),
        GetCallerIdentity(Service, true, true, "Who the caller is"),
        SignOut(Service, false, true, "End one of the caller's own sign-ins: its token stops working"),
        AssumeRoleWithSAML(Service, false, true, "A SAML user's sign-in (a verified assertion posted to /saml/acs): a bearer token with the roles it grants"),
        AssumeRoleWithWebIdentity(Service, false, true, "An OpenID Connect user's sign-in (code with PKCE, ID token verified at /oidc/callback): a bearer token"),
        SignIn(Service, false, true, "A local user's sign-in (password, and TOTP code once enrolled): a bearer token"),
        CreateLocalUser(Service, false, true, "A local user (argon2id password) for small sites"),
        DeleteLocalUser(Service, false, true, "Delete a local user"),
        UnlockLocalUser(Service, false, true, "Clear a local user's lock after failed sign-ins"),
        ChangePassword(Service, false, true, "A local user's new password (the old one and a code again): every sign-in of theirs ends, and their sessions if asked"),
        AssociateSoftwareToken(Service, false, true, "Start enrolling a TOTP device: a new secret, pending"),
        VerifySoftwareToken(Service, false, true, "Finish enrolling a TOTP device with a code from it"),
    }
    Audit(AuditAction) "audit" {
        LookupEvents(Service, true, true, "Search the audit trail (CloudTrail's attributes plus CorrelationId), newest first"),
        Query(Service, true, true, "Run one read-only SQL SELECT over the audit index"),
        Trace(Service, true, true, "One person's, session's or correlation's actions, in order"),
        ValidateTrail(Service, true, true, "Check the trail's digests, logs and checkpoints (what `audit validate` does)"),
        Reindex(Service, false, true, "Rebuild the audit index from the trail's files"),
        GenerateUsageReports(Service, false, true, "Write a day's AppStream-style session and application reports to the reports bucket"),
    }
    Cluster(ClusterAction) "cluster" {
        DescribeNodes(Service, true, true, "The nodes sharing the metadata store: state, lease, address, instances"),
    }
    Airlock(AirlockAction) "airlock" {
        CreateRequest(Service, false, true, "Start a request to move files out of (EXPORT) or into (IMPORT) a workspace"),
        AddFile(Service, false, true, "Copy a file into a draft request (an export's from an object you may read)"),
        RemoveFile(Service, false, true, "Remove a file from a draft request"),
        SubmitRequest(Service, false, true, "Freeze the request's manifest and run the checks; then it waits for review"),
        WithdrawRequest(Service, false, true, "Withdraw a request not yet in review"),
        DescribeRequests(Service, true, true, "Your requests: files, checks and, once decided, the reviewers' comments"),
        DescribeReviewQueue(Service, true, true, "Every request, as reviewers and auditors see them"),
        CastVote(Service, false, true, "Approve, request changes to or reject a request you did not create"),
        ReleaseRequest(Service, false, true, "Release an approved request: a signed release record"),
        RevokeRequest(Service, false, true, "Revoke a release: every download link ends"),
        GetReleaseRecord(Service, true, true, "The signed release record of a released request"),
        CreateDownloadUrl(Service, false, true, "A link to one released file, for the request's researcher alone"),
        DownloadFile(Service, true, false, "One use of a download link"),
        PreviewFile(Service, true, false, "The start of a file of another's request, for its review"),
        GetImports(Service, true, false, "Your released imports into a workspace, for its /imports"),
    }
}

/// The built-in functions a bucket notification may name: the registry both the storage
/// service (which checks a configuration) and the dispatcher (which runs them) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinFunction {
    /// Writes `<key>.sha256` beside each new object: a checksum for data handed in.
    Sha256Sidecar,
    /// Answers a launcher's `session.json` with a notebook URL or a typed rejection.
    SessionValidator,
}

impl BuiltinFunction {
    const ALL: [BuiltinFunction; 2] = [BuiltinFunction::Sha256Sidecar, BuiltinFunction::SessionValidator];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinFunction::Sha256Sidecar => "sha256-sidecar",
            BuiltinFunction::SessionValidator => "session-validator",
        }
    }

    pub fn from_name(name: &str) -> Option<BuiltinFunction> {
        BuiltinFunction::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        BuiltinFunction::ALL.iter().map(|f| f.name()).collect()
    }
}

pub fn find(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn declarations() -> Vec<policy::ActionDecl> {
    ACTIONS.iter().map(|a| policy::ActionDecl { name: a.name.to_owned(), resource: a.resource }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered action has exactly one entry, one variant and a well-formed name; the
    /// dispatchers' exhaustive `match`es (no catch-all) then give each exactly one handler.
    #[test]
    fn every_action_is_registered_once_under_its_variant() {
        for (index, entry) in ACTIONS.iter().enumerate() {
            model::ActionName::parse(entry.name).unwrap_or_else(|e| panic!("`{}`: {e}", entry.name));
            assert_eq!(find(entry.name).map(|found| found.action), Some(entry.action), "`{}` is registered twice", entry.name);
            assert!(
                ACTIONS[index + 1..].iter().all(|other| other.action != entry.action && other.name != entry.name),
                "`{}` has two entries",
                entry.name
            );
            let variant = format!("{:?}", entry.action);
            let (_, action) = entry.name.split_once(':').expect("a registered name has a service");
            assert!(variant.ends_with(&format!("({action})")), "`{}` is registered as {variant}", entry.name);
        }
    }
}
