//! Finding 15: `deploy:Deploy` (an admin's right, which federated users get from their IdP)
//! named Python packages that the server then `pip install`ed as root: a package's build
//! script ran as root on the control-plane host.

use serde_json::json;

use crate::support::server::Server;

/// A spec that makes `ursula` (a user, not the host's operator) an administrator: she may deploy.
const URSULA_DEPLOYS: &str = r#"[[buckets]]
name = "datasandbox-home"
home_folders = true

[[policies]]
name = "operator-admin"
text = 'permit (principal is DataSandbox::Operator, action, resource);'

[[policies]]
name = "ursula-deploys"
text = 'permit (principal == DataSandbox::User::"ursula", action, resource);'
"#;

/// A source distribution whose `setup.py` leaves a mark where it runs, served to pip from a
/// local directory (`PIP_FIND_LINKS`).
fn booby_trapped_sdist(dir: &std::path::Path, marker: &std::path::Path) {
    let name = "datasandbox-f15-probe-x7q";
    let root = dir.join(format!("{name}-1.0"));
    std::fs::create_dir_all(&root).expect("sdist dir");
    std::fs::write(
        root.join("setup.py"),
        format!(
            "import os\nopen({:?}, 'w').write(str(os.getuid()))\nfrom setuptools import setup\nsetup(name={name:?}, version='1.0')\n",
            marker.display().to_string()
        ),
    )
    .expect("setup.py");
    std::fs::write(root.join("PKG-INFO"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")).expect("PKG-INFO");
    let tarball = dir.join(format!("{name}-1.0.tar.gz"));
    let status =
        std::process::Command::new("tar").arg("czf").arg(&tarball).arg("-C").arg(dir).arg(format!("{name}-1.0")).status().expect("tar");
    assert!(status.success());
}

/// `base` with an image naming the package, used by the default fleet (so the deploy builds it).
fn spec_with_package(base: &str) -> String {
    format!(
        "image_name = \"analysis\"\n{base}\n[images.analysis]\nrecipe = \"notebook\"\npython_packages = [\"datasandbox-f15-probe-x7q\"]\n"
    )
}

#[test]
fn f15_only_the_local_operator_names_packages_and_no_package_code_runs_at_build() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let (links, cache, marker) = (scratch.path().join("links"), scratch.path().join("cache"), scratch.path().join("ran-as"));
    booby_trapped_sdist(&links, &marker);
    // The notebooks' image from the base recipe: this server's cache is empty, and the test is
    // about the image it deploys, not about a JupyterLab environment from PyPI.
    let server = Server::start_with_env(
        &["images.datasandbox-notebook.recipe=base"],
        &[("PIP_FIND_LINKS", links.to_str().expect("utf-8")), ("DATASANDBOX_CACHE_DIR", cache.to_str().expect("utf-8"))],
    );
    let vpc = server.vpc();
    server.ok("deploy:Deploy", json!({ "Spec": URSULA_DEPLOYS, "Overrides": [vpc] }));

    // A user allowed to deploy cannot name packages: refused before anything is built.
    let token = server.token_for("ursula");
    let refused = server.call_as(&token, "deploy:Deploy", &json!({ "Spec": spec_with_package(URSULA_DEPLOYS), "Overrides": [vpc] }));
    assert_eq!(refused.exit, 1, "{refused:?}");
    assert_eq!(refused.stderr["Code"], "AccessDeniedException", "{refused:?}");
    assert!(refused.stderr["Message"].as_str().is_some_and(|m| m.contains("local operator")), "{refused:?}");
    assert!(!marker.exists(), "the package's code ran");

    // The operator may name them, but the build takes binary wheels only: a source
    // distribution's setup.py never runs (and pip runs as an unprivileged user besides).
    let built = server.call("deploy:Deploy", &json!({ "Spec": spec_with_package(URSULA_DEPLOYS), "Overrides": [vpc] }));
    assert_ne!(built.exit, 0, "a package without a wheel was installed: {built:?}");
    assert!(!marker.exists(), "the package's setup.py ran as uid {}", std::fs::read_to_string(&marker).unwrap_or_default());
}
