use super::*;

fn actions() -> Vec<ActionDecl> {
    vec![
        ActionDecl { name: "storage:GetObject".into(), resource: ResourceKind::Object },
        ActionDecl { name: "storage:ListBuckets".into(), resource: ResourceKind::Service },
    ]
}

const HOME_POLICY: &str = r#"permit (principal is DataSandbox::User, action == DataSandbox::Action::"storage:GetObject", resource is DataSandbox::Object)
when { resource has home && resource.home == principal.home };"#;

fn user(name: &str) -> Principal {
    let user = model::UserRef::custom(model::UserId::new(name).expect("valid"));
    Principal::User { user, channel: Channel::Instance, mfa: false, roles: vec![] }
}

fn home_of(name: &str) -> String {
    model::UserRef::custom(model::UserId::new(name).expect("valid")).home().id()
}

fn object(home: Option<&str>) -> Resource {
    Resource::Object { bucket: "b".into(), bucket_home_folders: true, key: "k".into(), home: home.map(Into::into), notifies: vec![] }
}

#[test]
fn owner_is_allowed_and_others_are_denied() {
    let authorizer = Authorizer::load(&[("home".into(), HOME_POLICY.into())], &actions()).expect("valid policy");
    let allowed = authorizer.authorize(&user("aa"), "storage:GetObject", &object(Some(&home_of("aa"))), "127.0.0.1");
    assert!(allowed.allowed);
    assert_eq!(allowed.reasons, vec!["home".to_owned()]);
    assert!(!authorizer.authorize(&user("aa"), "storage:GetObject", &object(Some(&home_of("bb"))), "127.0.0.1").allowed);
    assert!(!authorizer.authorize(&user("aa"), "storage:GetObject", &object(None), "127.0.0.1").allowed);
    assert!(!authorizer.authorize(&Principal::Operator { uid: 0 }, "storage:GetObject", &object(None), "127.0.0.1").allowed);
}

#[test]
fn unknown_action_is_a_deny_not_a_crash() {
    let authorizer = Authorizer::load(&[("home".into(), HOME_POLICY.into())], &actions()).expect("valid policy");
    let decision = authorizer.authorize(&user("xx"), "storage:Nope", &object(None), "127.0.0.1");
    assert!(!decision.allowed);
    assert!(!decision.errors.is_empty());
}

#[test]
fn bad_policies_are_rejected_with_position() {
    let syntax =
        Authorizer::load(&[("broken".into(), "permit (principal, action, resource) when { resource.nope == }".into())], &actions())
            .err()
            .expect("syntax error");
    assert_eq!(syntax[0].policy, "broken");
    assert!(syntax[0].message.contains("line 1, column"), "{}", syntax[0].message);

    let typed = Authorizer::load(&[("typo".into(), "permit (principal is DataSandbox::Usr, action, resource);".into())], &actions())
        .err()
        .expect("unknown entity type");
    assert_eq!(typed[0].policy, "typo");
    assert!(typed[0].message.contains("Usr"), "{}", typed[0].message);
}

/// The request entities are built without the schema's checks: every kind of principal and
/// resource must still be what the schema declares.
#[test]
fn request_entities_conform_to_the_schema() {
    let authorizer = Authorizer::load(&[("home".into(), HOME_POLICY.into())], &actions()).expect("valid policy");
    let mut member = user("aa");
    if let Principal::User { roles, .. } = &mut member {
        roles.push("analysts".into());
    }
    let principals = [
        member,
        Principal::Operator { uid: 0 },
        Principal::Function { name: "f".into() },
        Principal::Instance { id: "i-1".into(), roles: vec!["fleet".into()] },
    ];
    let resources = [
        Resource::Service("storage".into()),
        Resource::Bucket { name: "b".into(), home_folders: false },
        object(Some(&home_of("aa"))),
        Resource::Object { bucket: "b".into(), bucket_home_folders: false, key: "k".into(), home: None, notifies: vec!["f".into()] },
        Resource::Parameter { name: "/p".into() },
        Resource::Key { id: "k-1".into(), aliases: vec!["alias/a".into()] },
        Resource::Instance { id: "i-1".into() },
        Resource::Stack { name: "s".into(), user: "aa".into() },
    ];
    for principal in &principals {
        for resource in &resources {
            if matches!((principal, resource), (Principal::Instance { id, .. }, Resource::Instance { id: other }) if id == other) {
                // The same entity twice: refused, so the request is denied.
                let built = RequestEntities::of(principal, resource).expect("built");
                let refused = Entities::from_entities(built.entities, None).expect_err("a duplicate entity is refused");
                assert!(refused.to_string().contains("duplicate"), "{refused}");
                continue;
            }
            let built = RequestEntities::of(principal, resource).expect("built");
            if let Err(err) = Entities::from_entities(built.entities, Some(&authorizer.schema)) {
                panic!("{principal:?} on {resource:?}: {err}");
            }
        }
    }
}

/// The policies Cedar is given for an action are only those whose scope admits it, and the
/// decision is the one the whole set gives: each kind of action scope, permit and forbid.
#[test]
fn the_policies_sliced_by_action_decide_as_the_whole_set() {
    let policies = [
        ("home", HOME_POLICY),
        ("any", r#"permit (principal is DataSandbox::Operator, action, resource);"#),
        (
            "listed",
            r#"permit (principal is DataSandbox::User, action in [DataSandbox::Action::"storage:ListBuckets", DataSandbox::Action::"storage:GetObject"], resource) when { principal.mfa };"#,
        ),
        (
            "forbid",
            r#"forbid (principal, action == DataSandbox::Action::"storage:GetObject", resource is DataSandbox::Object) when { resource.key == "secret" };"#,
        ),
    ];
    let policies: Vec<(String, String)> = policies.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())).collect();
    let authorizer = Authorizer::load(&policies, &actions()).expect("valid policies");
    assert_eq!(authorizer.by_action["storage:ListBuckets"].policies().count(), 2, "any and listed");
    assert_eq!(authorizer.by_action["storage:GetObject"].policies().count(), 4);
    let mfa_user = {
        let user = model::UserRef::custom(model::UserId::new("aa").expect("valid"));
        Principal::User { user, channel: Channel::Instance, mfa: true, roles: vec![] }
    };
    let secret = Resource::Object { bucket: "b".into(), bucket_home_folders: true, key: "secret".into(), home: None, notifies: vec![] };
    let whole = Authorizer { by_action: HashMap::new(), ..Authorizer::load(&policies, &actions()).expect("valid policies") };
    for principal in [user("aa"), mfa_user, Principal::Operator { uid: 0 }] {
        for (action, resource) in [
            ("storage:GetObject", object(Some(&home_of("aa")))),
            ("storage:GetObject", secret.clone()),
            ("storage:ListBuckets", Resource::Service("storage".into())),
        ] {
            let (sliced, all) = (
                authorizer.authorize(&principal, action, &resource, "127.0.0.1"),
                whole.authorize(&principal, action, &resource, "127.0.0.1"),
            );
            assert_eq!(sliced, all, "{principal:?} {action} {resource:?}");
        }
    }
}
