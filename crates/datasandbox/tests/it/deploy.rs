//! `datasandbox diff / deploy / destroy`: the seed's nested stacks from nothing, updates in
//! place, a replacement, an invalid spec, a failure midway rolled back resource by resource,
//! and a destroy that keeps only what must be retained.

use serde_json::{Value, json};

use crate::support::server::{Called, Server, eventually};

/// An HTTP server on loopback that answers every request with `body`; its base URL.
fn serve_forever(body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
            let _ = std::io::Write::write_all(&mut stream, body.as_bytes());
        }
    });
    base
}

fn text(called: &Called) -> String {
    let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    format!("{}\n{}", show(&called.stdout), show(&called.stderr))
}

fn fleet(server: &Server) -> Value {
    server.ok("streaming:DescribeFleets", json!({}))["Fleets"][0].clone()
}

fn stack(server: &Server) -> Value {
    server.ok("streaming:DescribeStacks", json!({}))["Stacks"][0].clone()
}

fn permission(stack: &Value, action: &str) -> String {
    let settings = stack["UserSettings"].as_array().cloned().unwrap_or_default();
    settings.iter().find(|s| s["Action"] == action).map(|s| s["Permission"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

fn notification_ids(server: &Server) -> Vec<String> {
    let config = server.ok("storage:GetBucketNotificationConfiguration", json!({ "Bucket": "datasandbox-home" }));
    let all = config["LambdaFunctionConfigurations"].as_array().cloned().unwrap_or_default();
    all.iter().filter_map(|c| c["Id"].as_str().map(str::to_owned)).collect()
}

fn bucket_names(server: &Server) -> Vec<String> {
    let listed = server.ok("storage:ListBuckets", json!({}));
    listed["Buckets"].as_array().cloned().unwrap_or_default().iter().filter_map(|b| b["Name"].as_str().map(str::to_owned)).collect()
}

fn launcher_timeout(server: &Server) -> Value {
    let found = server.ok("parameters:GetParameter", json!({ "Name": "/datasandbox/launcher/config" }));
    let config: Value = serde_json::from_str(found["Parameter"]["Value"].as_str().expect("a value")).expect("JSON");
    config["TimeoutSeconds"].clone()
}

/// What an operator would check after each step, for before/after comparisons.
fn snapshot(server: &Server) -> Value {
    let mut fleet = fleet(server);
    fleet["ComputeCapacityStatus"] = Value::Null; // instances come and go on their own
    json!({
        "fleet": fleet,
        "stack": stack(server),
        "buckets": bucket_names(server),
        "notifications": notification_ids(server),
        "launcher": launcher_timeout(server),
        "stacks": server.ok("deploy:DescribeStacks", json!({})),
    })
}

#[test]
fn the_seed_stacks_deploy_update_replace_roll_back_and_destroy() {
    let server = Server::start(&[]);
    // Each deploy passes the network the server runs on, as `up` had it.
    let vpc = server.vpc();
    let deploy = |args: &[&str]| {
        let mut all = vec!["deploy", "-c", &vpc];
        all.extend_from_slice(args);
        server.cli(&all, &[])
    };

    // From nothing: `up` deployed every stack of the seed's defaults.
    let stacks = server.ok("deploy:DescribeStacks", json!({}));
    for s in stacks["Stacks"].as_array().expect("stacks") {
        let expected = if s["StackName"] == "saml" { Value::Null } else { json!("CREATE_COMPLETE") };
        assert_eq!(s["StackStatus"], expected, "{s:#}");
    }
    let streaming = stacks["Stacks"].as_array().expect("stacks").iter().find(|s| s["StackName"] == "streaming").expect("streaming").clone();
    assert_eq!(streaming["Outputs"]["StackName"], "datasandbox-stack");
    assert_eq!(streaming["Outputs"]["FleetName"], "datasandbox-fleet");
    eventually(10, "the ON_DEMAND fleet runs", || (fleet(&server)["State"] == "RUNNING").then_some(()));
    assert_eq!(fleet(&server)["FleetType"], "ON_DEMAND");
    assert_eq!(stack(&server)["FleetName"], "datasandbox-fleet");
    assert_eq!(notification_ids(&server), ["session-validator"]);
    assert_eq!(launcher_timeout(&server), 300);
    let rotation = server.ok("keys:GetKeyRotationStatus", json!({ "KeyId": "alias/notebook-kms" }));
    assert_eq!(rotation["KeyRotationEnabled"], true);
    let mut buckets = bucket_names(&server);
    buckets.sort();
    // The airlock's own bucket is the platform's, made at start, beside the spec's.
    assert_eq!(buckets, ["datasandbox-airlock", "datasandbox-home", "datasandbox-reports"]);

    // A second deploy of the same spec changes nothing.
    let again = deploy(&[]);
    assert_eq!(again.exit, 0, "{}", text(&again));
    assert!(text(&again).contains("no changes"), "{}", text(&again));

    // Someone else's notification on the home bucket, and data in it.
    let other = json!({ "Id": "other", "LambdaFunctionArn": "sha256-sidecar", "Events": ["ObjectCreated:*"],
        "Filter": { "Key": { "FilterRules": [{ "Name": "suffix", "Value": ".csv" }] } } });
    let mut config = server.ok("storage:GetBucketNotificationConfiguration", json!({ "Bucket": "datasandbox-home" }));
    config["LambdaFunctionConfigurations"].as_array_mut().expect("list").push(other);
    server.ok("storage:PutBucketNotificationConfiguration", json!({ "Bucket": "datasandbox-home", "NotificationConfiguration": config }));
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "user/custom/abc/notes.txt", "Body": "bm90ZXM=" }));

    // The instance type: an update in place, announced as such.
    let medium = ["-c", "instance_type=stream.standard.medium"];
    let diff = server.cli(&["diff", "-c", &vpc, medium[0], medium[1]], &[]);
    assert_eq!(diff.exit, 0, "{}", text(&diff));
    let shown = text(&diff);
    assert!(shown.contains("[~] Fleet:datasandbox-fleet update"), "{shown}");
    assert!(shown.contains(r#"InstanceType: "stream.standard.small" → "stream.standard.medium""#), "{shown}");
    assert!(!shown.contains("replace"), "{shown}");
    let updated = deploy(&medium);
    assert_eq!(updated.exit, 0, "{}", text(&updated));
    assert!(text(&updated).contains("UPDATE_COMPLETE"), "{}", text(&updated));
    assert_eq!(fleet(&server)["InstanceType"], "stream.standard.medium");

    // The fleet type is immutable: announced as a replacement, and performed, keeping the
    // stack's association and the fleet running. The stack's settings change too, and the
    // bucket keeps every notification.
    // The identity provider's metadata joins too (the `saml` stack), read from its URL.
    let document = r#"<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>MIIBAAAA</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor></IDPSSODescriptor></EntityDescriptor>"#;
    let idp = format!("idp_metadata={}/idp.xml", serve_forever(document));
    let always_on = [
        "-c",
        &vpc,
        "-c",
        "instance_type=stream.standard.medium",
        "-c",
        "fleet_type=ALWAYS_ON",
        "-c",
        "fleets.datasandbox-fleet.desired_instances=1",
        "-c",
        "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED",
        "-c",
        &idp,
    ];
    let mut args = vec!["diff"];
    args.extend_from_slice(&always_on);
    let shown = text(&server.cli(&args, &[]));
    assert!(shown.contains("[-/+] Fleet:datasandbox-fleet replace"), "{shown}");
    assert!(shown.contains(r#"FleetType: "ON_DEMAND" → "ALWAYS_ON"  (requires replacement)"#), "{shown}");
    assert!(shown.contains(r#"UserSettings.FILE_DOWNLOAD.Permission: "DISABLED" → "ENABLED""#), "{shown}");
    let replaced = deploy(&always_on);
    assert_eq!(replaced.exit, 0, "{}", text(&replaced));
    assert!(text(&replaced).contains("requires the creation of a new physical resource (FleetType)"), "{}", text(&replaced));
    let now = fleet(&server);
    assert_eq!(now["FleetType"], "ALWAYS_ON");
    assert_eq!(now["ComputeCapacityStatus"]["Desired"], 1);
    assert!(now["State"] == "STARTING" || now["State"] == "RUNNING", "{now:#}");
    assert_eq!(stack(&server)["FleetName"], "datasandbox-fleet");
    assert_eq!(permission(&stack(&server), "FILE_DOWNLOAD"), "ENABLED");
    assert_eq!(notification_ids(&server), ["session-validator", "other"]);
    let provider = server.data_dir().join("identity-providers/idp_sample.xml");
    assert!(std::fs::read_to_string(&provider).expect("the provider's metadata").contains("https://idp.example"));
    eventually(30, "the replaced ALWAYS_ON fleet runs its instance", || {
        (fleet(&server)["ComputeCapacityStatus"]["Running"] == 1).then_some(())
    });

    // An invalid spec changes nothing and names every problem.
    // The replaced fleet settles first: its state is not what a rollback must restore.
    eventually(30, "the replaced fleet runs", || (fleet(&server)["State"] == "RUNNING").then_some(()));
    let before = snapshot(&server);
    let mut args = vec!["deploy"];
    args.extend_from_slice(&always_on);
    args.extend_from_slice(&["-c", "fleet_type=SOMETIMES", "-c", "vpc_cidr=8.8.8.0/24", "-c", "stacks.datasandbox-stack.fleet=nowhere"]);
    let invalid = server.cli(&args, &[]);
    assert_eq!(invalid.exit, 1, "{}", text(&invalid));
    let shown = text(&invalid);
    for problem in ["fleet_type", "SOMETIMES", "vpc_cidr", "not a private", "stacks.datasandbox-stack.fleet", "nowhere"] {
        assert!(shown.contains(problem), "`{problem}` not named in:\n{shown}");
    }
    assert_eq!(snapshot(&server), before);
    // So does an identity provider whose metadata cannot be read.
    let mut args = vec!["deploy"];
    args.extend_from_slice(&always_on);
    args.extend_from_slice(&["-c", "idp_metadata=/nonexistent/idp.xml"]);
    let unreadable = server.cli(&args, &[]);
    assert_eq!(unreadable.exit, 1, "{}", text(&unreadable));
    assert!(text(&unreadable).contains("idp_metadata: cannot read `/nonexistent/idp.xml`"), "{}", text(&unreadable));
    assert_eq!(snapshot(&server), before);

    // A failure midway (the fleet's image is missing) after a new bucket was created and the
    // launcher's parameter updated: both are undone, nothing else changed.
    let spec = std::fs::read_to_string(server.data_dir().join("datasandbox.toml")).expect("spec");
    let with_bucket =
        format!("{spec}\n[[buckets]]\nname = \"datasandbox-home\"\nhome_folders = true\n\n[[buckets]]\nname = \"datasandbox-extra\"\n");
    let path = server.data_dir().join("with-bucket.toml");
    std::fs::write(&path, with_bucket).expect("write spec");
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["deploy", "--spec", path];
    args.extend_from_slice(&always_on);
    args.extend_from_slice(&["-c", "launcher.timeout_seconds=60", "-c", "fleets.datasandbox-fleet.image_name=missing-image"]);
    let failed = server.cli(&args, &[]);
    assert_eq!(failed.exit, 1, "{}", text(&failed));
    let shown = text(&failed);
    for expected in [
        "Bucket:datasandbox-extra                     CREATE_COMPLETE",
        "Parameter:/datasandbox/launcher/config       UPDATE_COMPLETE",
        "Fleet:datasandbox-fleet                      UPDATE_FAILED  image `missing-image` is not built",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "Bucket:datasandbox-extra                     DELETE_COMPLETE  rolled back",
        "Parameter:/datasandbox/launcher/config       UPDATE_COMPLETE  rolled back",
        "UPDATE_ROLLBACK_COMPLETE",
        "every change was rolled back",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing from:\n{shown}");
    }
    let mut after = snapshot(&server);
    let mut expected = before.clone();
    // Only the stacks' status tells of the failed deploy.
    after["stacks"] = Value::Null;
    expected["stacks"] = Value::Null;
    assert_eq!(after, expected);
    assert_eq!(launcher_timeout(&server), 300);
    assert!(!bucket_names(&server).contains(&"datasandbox-extra".to_owned()));
    assert_eq!(fleet(&server)["ImageName"], "datasandbox-image");
    let mut args = vec!["diff"];
    args.extend_from_slice(&always_on);
    assert!(text(&server.cli(&args, &[])).contains("no changes"));

    // Deploys are audited actions, with the plan in the record; their steps carry the
    // deployer's name and the deploy's correlation id.
    let records = server.audit(&[("EventName", "Deploy")]);
    let replacing = records
        .iter()
        .find(|r| r["responseElements"]["Changes"].as_array().is_some_and(|c| c.iter().any(|c| c["Action"] == "Replace")))
        .expect("the replacing deploy's record");
    let correlation = replacing["correlationId"].as_str().expect("a correlation id");
    let deletes = server.audit(&[("EventName", "DeleteFleet")]);
    assert!(deletes.iter().any(|r| r["correlationId"] == correlation && r["userIdentity"]["type"] == "Operator"), "{deletes:#?}");
    assert!(records.iter().any(|r| r["errorCode"] == "DeploymentFailed"), "the failed deploy is audited too");

    // Destroy: refused without confirmation; then everything goes but what is retained.
    assert_eq!(server.cli(&["destroy"], &[]).exit, 1);
    let destroyed = server.cli(&["destroy", "--yes"], &[]);
    assert_eq!(destroyed.exit, 0, "{}", text(&destroyed));
    let shown = text(&destroyed);
    assert!(shown.contains("retained Key:alias/notebook-kms: keys are retained"), "{shown}");
    assert!(shown.contains("retained Bucket:datasandbox-home: it holds objects"), "{shown}");
    assert!(shown.contains("Policy:operator-admin"), "{shown}");
    assert_eq!(bucket_names(&server), ["datasandbox-airlock", "datasandbox-home"]);
    assert_eq!(server.ok("streaming:DescribeFleets", json!({}))["Fleets"], json!([]));
    assert_eq!(server.ok("streaming:DescribeStacks", json!({}))["Stacks"], json!([]));
    assert_eq!(notification_ids(&server), ["other"], "only our notification goes");
    assert_eq!(server.call("parameters:GetParameter", &json!({ "Name": "/datasandbox/launcher/config" })).exit, 1);
    assert_eq!(server.ok("keys:GetKeyRotationStatus", json!({ "KeyId": "alias/notebook-kms" }))["KeyRotationEnabled"], true);
    assert!(!provider.exists(), "the identity provider goes with the saml stack");

    // And the environment comes back on the retained bucket and key.
    let back = deploy(&[]);
    assert_eq!(back.exit, 0, "{}", text(&back));
    eventually(10, "the fleet runs again", || (fleet(&server)["State"] == "RUNNING").then_some(()));
    assert_eq!(notification_ids(&server), ["other", "session-validator"]);
}

/// Instances of the running fleet: (id, type, user).
fn instances(server: &Server) -> Vec<(String, String, Option<String>)> {
    let listed = server.ok("streaming:DescribeInstances", json!({}));
    listed["Instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|i| i["State"] == "RUNNING")
        .map(|i| {
            let field = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
            (field("InstanceId"), field("InstanceType"), i["UserId"].as_str().map(str::to_owned))
        })
        .collect()
}

#[test]
fn a_new_instance_type_reaches_instances_as_their_sessions_end() {
    let overrides = ["fleet_type=ALWAYS_ON".to_owned(), "fleets.datasandbox-fleet.desired_instances=1".to_owned()];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let server = crate::support::streaming::server(&refs);
    eventually(30, "a warm instance", || (instances(&server).len() == 1).then_some(()));
    let cookie = crate::support::streaming::redeem(&server, "alice");
    let session = eventually(30, "alice's session", || {
        let s = crate::support::streaming::status(&server, &cookie);
        (s["State"] == "ACTIVE").then_some(s)
    });
    let busy = session["InstanceId"].as_str().expect("an instance").to_owned();

    // Deploy the same spec (the overrides `up` had) with a bigger instance type.
    let mut args = vec!["deploy".to_owned()];
    for o in [server.vpc(), "stacks.datasandbox-stack.application=shell".to_owned()].iter().chain(&overrides) {
        args.extend(["-c".to_owned(), o.clone()]);
    }
    args.extend(["-c".to_owned(), "instance_type=stream.standard.medium".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let deployed = server.cli(&args, &[]);
    assert_eq!(deployed.exit, 0, "{:?}", deployed.stderr);

    // The session keeps its instance; once it ends, the fleet's instance is of the new type.
    // A negative check: the engine, woken by the deploy, has time to (wrongly) take it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        instances(&server)
            .iter()
            .any(|(id, kind, user)| *id == busy && kind == "stream.standard.small" && user.as_deref() == Some("alice"))
    );
    crate::support::streaming::expire(&server, &session);
    eventually(30, "the warm instance to be of the new type", || {
        let now = instances(&server);
        (now.len() == 1 && now[0].1 == "stream.standard.medium" && now[0].0 != busy).then_some(())
    });
}
