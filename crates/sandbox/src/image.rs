//! Images: an immutable, versioned directory holding a root filesystem and a manifest with
//! the image's application catalog. The `base` recipe builds the root from the host's own
//! packages: a skeleton whose `/usr` is the host's `/usr`, bound read-only at start. The
//! `notebook` recipe adds a Python virtual environment with JupyterLab from PyPI at
//! `/opt/jupyter` (built once per package list into a host-wide cache, which the image binds
//! read-only: the cache's entries are never changed once made, only added). The
//! `desktop` recipe adds what a pixel-streamed session shows: the X/VNC server (TigerVNC's
//! Xvnc) and a kiosk browser (Chromium) from the host's Debian packages, with the
//! configuration they read from `/etc` (fonts, and a managed browser policy that turns off
//! downloads, developer tools, sign-in and every other way out of the browser). Building
//! `desktop` first checks that the host has every program it needs (Xvnc, Chromium, xclip,
//! CUPS, the fonts) and names the Debian package of any that is missing. An image that binds
//! a host directory which is gone refuses to open and says how to rebuild it.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, setup};
use crate::spec::WORKSPACE_UID;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub name: String,
    pub display_name: String,
    pub command: String,
    pub arguments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub recipe: String,
    /// Host directories bound read-only into the root at start: (host, inside).
    pub host_binds: Vec<(PathBuf, PathBuf)>,
    pub applications: Vec<Application>,
}

/// A built image on disk.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn open(dir: &Path) -> Result<Image, SandboxError> {
        let text = std::fs::read_to_string(dir.join("manifest.json"))
            .map_err(|e| setup("read the image manifest", format!("{}: {e}", dir.display())))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| setup("read the image manifest", e))?;
        if let Some((missing, _)) = manifest.host_binds.iter().find(|(host, _)| !host.is_dir()) {
            return Err(setup(
                "open the image",
                format!(
                    "{} binds {} from the host, which is gone; rebuild the image with `datasandbox image build {} --name {}`",
                    dir.display(),
                    missing.display(),
                    manifest.recipe,
                    manifest.name
                ),
            ));
        }
        Ok(Image { dir: dir.to_owned(), manifest })
    }
}

/// What to build: the recipe and what it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    Base,
    /// The base plus the display and the kiosk browser of pixel-streamed sessions.
    Desktop,
    /// The base plus a venv at `/opt/jupyter` with these PyPI packages.
    Notebook {
        python_packages: Vec<String>,
        cache: PathBuf,
    },
}

/// The packages of the `notebook` recipe unless the spec names others.
pub const NOTEBOOK_PACKAGES: &[&str] = &["jupyterlab", "ipykernel"];

/// The recipes `datasandbox image build` and the spec's `[images.<name>] recipe` know.
pub const RECIPES: &[&str] = &["base", "desktop", "notebook"];

/// Where venvs are cached across images unless the operator says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/datasandbox";

impl Recipe {
    /// The recipe named `name` (one of [`RECIPES`]); `python_packages` are the notebook's,
    /// defaulting to [`NOTEBOOK_PACKAGES`] when empty.
    pub fn named(name: &str, python_packages: &[String], cache: &Path) -> Option<Recipe> {
        match name {
            "base" => Some(Recipe::Base),
            "desktop" => Some(Recipe::Desktop),
            "notebook" => Some(Recipe::Notebook {
                python_packages: if python_packages.is_empty() {
                    NOTEBOOK_PACKAGES.iter().map(|p| (*p).to_owned()).collect()
                } else {
                    python_packages.to_vec()
                },
                cache: cache.to_owned(),
            }),
            _ => None,
        }
    }
}

/// The host programs the desktop recipe needs, with the Debian package of each.
const DESKTOP_PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/Xtigervnc", "tigervnc-standalone-server"),
    ("/usr/lib/chromium/chromium", "chromium"),
    ("/usr/bin/xclip", "xclip"),
    ("/usr/sbin/cupsd", "cups-daemon"),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
];

/// The kiosk browser's managed policy: Chromium reads it from
/// `/etc/chromium/policies/managed/`. The browser only shows the notebook; nothing it
/// offers may carry data out of the display (the network already has no other way out).
const BROWSER_POLICY: &str = r#"{
  "DownloadRestrictions": 3,
  "DeveloperToolsAvailability": 2,
  "BrowserSignin": 0,
  "SyncDisabled": true,
  "PasswordManagerEnabled": false,
  "AutofillAddressEnabled": false,
  "AutofillCreditCardEnabled": false,
  "ImportBookmarks": false,
  "MetricsReportingEnabled": false,
  "SpellCheckServiceEnabled": false,
  "TranslateEnabled": false,
  "DefaultBrowserSettingEnabled": false,
  "BackgroundModeEnabled": false,
  "HardwareAccelerationModeEnabled": false,
  "URLBlocklist": ["file://*", "chrome://*", "chrome-extension://*", "view-source:*", "devtools://*", "javascript:*"],
  "URLAllowlist": ["chrome://print"]
}
"#;

/// Builds the `base` image under `images/<name>/<version>/`, reporting each step.
pub fn build_base(images: &Path, name: &str, version: &str, progress: &mut dyn FnMut(&str)) -> Result<Image, SandboxError> {
    build(images, name, version, &Recipe::Base, progress)
}

/// Builds an image from a recipe under `images/<name>/<version>/`, reporting each step. The
/// image appears whole or not at all (built in a staging directory, then renamed).
pub fn build(images: &Path, name: &str, version: &str, recipe: &Recipe, progress: &mut dyn FnMut(&str)) -> Result<Image, SandboxError> {
    let dir = images.join(name).join(version);
    if dir.join("manifest.json").exists() {
        return Err(setup("build the image", format!("{} already exists; images are immutable, build a new version", dir.display())));
    }
    let staging = images.join(name).join(format!(".{version}.building"));
    let _ = std::fs::remove_dir_all(&staging);
    let root = staging.join("rootfs");
    progress("making the root skeleton");
    make_root_skeleton(&root)?;
    progress("writing /etc");
    write_etc(&root.join("etc"))?;
    let mut contents = Contents::base();
    let recipe_name = match recipe {
        Recipe::Base => "base",
        Recipe::Desktop => {
            add_desktop(&root.join("etc"), &mut contents, progress)?;
            "desktop"
        }
        Recipe::Notebook { python_packages, cache } => {
            add_notebook(&root, python_packages, cache, &mut contents, progress)?;
            "notebook"
        }
    };
    let Contents { applications, host_binds } = contents;
    let manifest = Manifest { name: name.to_owned(), version: version.to_owned(), recipe: recipe_name.into(), host_binds, applications };
    std::fs::write(staging.join("manifest.json"), serde_json::to_vec_pretty(&manifest).expect("serializes"))
        .map_err(|e| setup("build the image", e))?;
    progress("sealing the image");
    std::fs::rename(&staging, &dir).map_err(|e| setup("build the image", e))?;
    Ok(Image { dir, manifest })
}

/// What a recipe adds to the manifest: the applications it offers and the host directories
/// bound read-only into its instances.
struct Contents {
    applications: Vec<Application>,
    host_binds: Vec<(PathBuf, PathBuf)>,
}

impl Contents {
    /// What every image has: a shell, the notebook launcher, and the host's `/usr`.
    fn base() -> Contents {
        let applications = vec![
            Application { name: "shell".into(), display_name: "Shell".into(), command: "/bin/bash".into(), arguments: vec![] },
            // The seed's catalog application: the launcher that opens the user's notebook.
            Application {
                name: "notebook".into(),
                display_name: "Notebook".into(),
                command: "/run/datasandbox/datasandbox".into(),
                arguments: vec!["launcher".into()],
            },
        ];
        Contents { applications, host_binds: vec![(PathBuf::from("/usr"), PathBuf::from("/usr"))] }
    }
}

/// The root's top-level directories, with `/bin`, `/sbin` and `/lib*` linked into `/usr`.
fn make_root_skeleton(root: &Path) -> Result<(), SandboxError> {
    for directory in ["usr", "etc", "tmp", "run", "home/user", "dev", "proc", "data", "imports", "opt", "var/tmp", "root"] {
        std::fs::create_dir_all(root.join(directory)).map_err(|e| setup("build the image", e))?;
    }
    // Merged /usr, as on Debian 12: the top-level directories are links into /usr.
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        if Path::new("/").join(target).exists() {
            std::os::unix::fs::symlink(target, root.join(link)).map_err(|e| setup("build the image", e))?;
        }
    }
    Ok(())
}

/// The few files of `/etc` an instance needs: its users and groups, and name lookups from
/// files alone.
fn write_etc(etc: &Path) -> Result<(), SandboxError> {
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\nuser:x:{WORKSPACE_UID}:{WORKSPACE_UID}:workspace user:/home/user:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("root:x:0:\nuser:x:{WORKSPACE_UID}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost\n::1 localhost\n".to_owned()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n".to_owned()),
        // No resolv.conf: an instance has no name server, by design.
    ];
    for (file, content) in files {
        std::fs::write(etc.join(file), content).map_err(|e| setup("build the image", e))?;
    }
    Ok(())
}

/// The `desktop` recipe: checks the host has the display and the browser, then writes the
/// fonts' and the browser's configuration.
fn add_desktop(etc: &Path, contents: &mut Contents, progress: &mut dyn FnMut(&str)) -> Result<(), SandboxError> {
    progress("checking the display and the browser (host packages)");
    let missing: Vec<&str> = DESKTOP_PROGRAMS.iter().filter(|(path, _)| !Path::new(path).exists()).map(|(_, package)| *package).collect();
    if !missing.is_empty() {
        return Err(setup(
            "build the desktop image",
            format!("the host lacks {}; install them with `apt-get install {}`", missing.join(", "), missing.join(" ")),
        ));
    }
    progress("writing the fonts' and the browser's configuration into /etc");
    copy_tree(Path::new("/etc/fonts"), &etc.join("fonts"))?;
    let policies = etc.join("chromium/policies/managed");
    std::fs::create_dir_all(&policies).map_err(|e| setup("build the image", e))?;
    std::fs::write(policies.join("datasandbox.json"), BROWSER_POLICY).map_err(|e| setup("build the image", e))?;
    contents.applications.push(Application {
        name: "browser".into(),
        display_name: "Browser".into(),
        command: "/usr/lib/chromium/chromium".into(),
        arguments: BROWSER_ARGUMENTS.iter().map(|a| (*a).to_owned()).collect(),
    });
    Ok(())
}

/// The `notebook` recipe: the cached venv with JupyterLab, bound at `/opt/jupyter`.
fn add_notebook(
    root: &Path,
    python_packages: &[String],
    cache: &Path,
    contents: &mut Contents,
    progress: &mut dyn FnMut(&str),
) -> Result<(), SandboxError> {
    let venv = cached_venv(cache, python_packages, progress)?;
    // An instance has no route out: JupyterLab must not offer news or update checks.
    progress("writing JupyterLab's settings into the Python environment");
    write_if_changed(&venv.join("share/jupyter/lab/settings"), "overrides.json", JUPYTERLAB_OVERRIDES)?;
    // Kernels start with `-P`: no module from the notebook's folder (which the user can write)
    // comes before the launcher's own, so a planted `ipykernel_launcher.py` runs nothing.
    write_if_changed(&venv.join("share/jupyter/kernels/python3"), "kernel.json", KERNEL_SPEC)?;
    // Not copied (a quarter of a gigabyte per image): the cached venv, immutable once
    // made, is bound read-only at `/opt/jupyter` when an instance starts.
    std::fs::create_dir_all(root.join("opt/jupyter")).map_err(|e| setup("build the image", e))?;
    contents.host_binds.push((venv, PathBuf::from("/opt/jupyter")));
    contents.applications.push(Application {
        name: "jupyterlab".into(),
        display_name: "JupyterLab".into(),
        command: "/opt/jupyter/bin/python".into(),
        arguments: vec!["-m".into(), "jupyterlab".into()],
    });
    Ok(())
}

/// JupyterLab's settings overrides in the notebook image.
const JUPYTERLAB_OVERRIDES: &str = r#"{
  "@jupyterlab/apputils-extension:notification": { "fetchNews": "false", "checkForUpdates": false }
}
"#;

/// The notebook image's Python kernel.
const KERNEL_SPEC: &str = r#"{
  "argv": ["/opt/jupyter/bin/python", "-P", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
  "display_name": "Python 3 (ipykernel)",
  "language": "python",
  "metadata": { "debugger": true }
}
"#;

/// The size of a session's display, in pixels: Xvnc's geometry and the kiosk browser's window
/// (there is no window manager to maximize it).
pub const DISPLAY_SIZE: (u32, u32) = (1280, 800);

/// How the kiosk browser runs inside an instance. The instance is its sandbox: Chromium's
/// own (setuid or user-namespace) sandbox cannot start under no_new_privs and the seccomp
/// allow-list, so it is off, and with it the zygote that would try to set it up.
pub const BROWSER_ARGUMENTS: &[&str] = &[
    "--kiosk",
    "--no-sandbox",
    "--no-zygote",
    "--disable-gpu",
    "--no-first-run",
    "--noerrdialogs",
    "--disable-features=Translate,MediaRouter",
    "--password-store=basic",
    "--user-data-dir=/tmp/browser",
    "--window-position=0,0",
    // Printing goes straight to the session's printer (its print folder), with no dialog.
    "--kiosk-printing",
];

const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A venv with `packages`, from the host-wide cache or made there now (pip, from PyPI).
/// A venv found by its path: it is bound at `/opt/jupyter` and run as
/// `/opt/jupyter/bin/python -m …`, which finds its packages from its own location.
fn cached_venv(cache: &Path, packages: &[String], progress: &mut dyn FnMut(&str)) -> Result<PathBuf, SandboxError> {
    use sha2::Digest as _;
    let mut sorted = packages.to_vec();
    sorted.sort();
    // The system's Python, under /usr, which instances see read-only: a venv links to it.
    let python = std::process::Command::new(SYSTEM_PYTHON)
        .arg("--version")
        .output()
        .map_err(|e| setup("find /usr/bin/python3 (apt-get install python3-venv)", e))?;
    let key = hex::encode(&sha2::Sha256::digest(format!("{}\n{}", String::from_utf8_lossy(&python.stdout).trim(), sorted.join("\n")))[..8]);
    let venv = cache.join(format!("venv-{key}"));
    if venv.join("bin/python").exists() {
        progress(&format!("using the cached Python environment {}", venv.display()));
        return Ok(venv);
    }
    std::fs::create_dir_all(cache).map_err(|e| setup("make the image cache", format!("{}: {e}", cache.display())))?;
    // Packages named by a spec are code of the spec's choosing: they are installed by a user of
    // their own (not the server's root, not a user any other program runs as), from binary
    // wheels only (no package's build script runs), in a directory only that user and root can
    // enter; once they are in, nothing of that user runs any more and the venv becomes root's.
    let workspace = cache.join(format!(".build-{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workspace);
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&workspace)
            .map_err(|e| setup("make the venv", format!("{}: {e}", workspace.display())))?;
    }
    std::os::unix::fs::chown(&workspace, Some(BUILD_UID), Some(BUILD_UID)).map_err(|e| setup("make the venv", e))?;
    let staging = workspace.join("venv");
    let unprivileged = |program: &Path| {
        let mut command = std::process::Command::new(program);
        command.uid(BUILD_UID).gid(BUILD_UID).env("HOME", &workspace).env_remove("PIP_CACHE_DIR").current_dir(&workspace);
        command
    };
    progress("creating a Python virtual environment (python3 -m venv, as an unprivileged user)");
    let made =
        run(unprivileged(Path::new(SYSTEM_PYTHON)).args(["-m", "venv"]).arg(&staging), "create the venv (apt-get install python3-venv)");
    if let Err(err) = made {
        end_builder(&workspace);
        return Err(err);
    }
    progress(&format!("installing {} from PyPI (pip, binary wheels only; about a minute the first time)", sorted.join(", ")));
    let mut pip = unprivileged(&staging.join("bin/pip"));
    pip.args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--no-cache-dir",
        "--only-binary",
        ":all:",
        "--",
    ])
    .args(&sorted);
    let installed = run(&mut pip, "install the Python packages (PyPI must be reachable, and each must have a wheel)").and_then(|()| {
        // Nothing of the builder may run while the venv is sealed (it could swap a directory).
        kill_builder();
        give_to_root(&staging)
    });
    if let Err(err) = installed {
        end_builder(&workspace);
        return Err(err);
    }
    let renamed = std::fs::rename(&staging, &venv);
    end_builder(&workspace);
    match renamed {
        Ok(()) => {}
        // Another build made it meanwhile: use theirs.
        Err(_) if venv.join("bin/python").exists() => {}
        Err(e) => return Err(setup("cache the venv", e)),
    }
    Ok(venv)
}

/// Who installs an image's Python packages: an id of its own, which no account and no instance
/// has (the instances' pool ends 65536 ids below it: `sandbox.id_base`, `sandbox.id_slots`).
pub const BUILD_UID: u32 = (1 << 31) - 1;

/// Ends whatever the builder still runs.
fn kill_builder() {
    let _ = std::process::Command::new("pkill").args(["-KILL", "-U", &BUILD_UID.to_string()]).status();
}

/// Ends the builder and removes its directory.
fn end_builder(workspace: &Path) {
    kill_builder();
    let _ = std::fs::remove_dir_all(workspace);
}

/// Makes everything under `dir` root's (not following links), writable by root alone and
/// without set-id bits, so that the user who built it can no longer change what instances run.
fn give_to_root(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::os::unix::fs::lchown(dir, Some(0), Some(0)).map_err(|e| setup("seal the venv", format!("{}: {e}", dir.display())))?;
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| setup("seal the venv", format!("{}: {e}", dir.display())))?;
    if !metadata.file_type().is_symlink() {
        let mode = metadata.permissions().mode() & 0o755;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| setup("seal the venv", format!("{}: {e}", dir.display())))?;
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(|e| setup("seal the venv", format!("{}: {e}", dir.display())))? {
            give_to_root(&entry.map_err(|e| setup("seal the venv", e))?.path())?;
        }
    }
    Ok(())
}

/// Writes `content` to `dir/name` unless it holds exactly that: whole or not at all (a
/// temporary file renamed over it), so that instances reading it never see half a file.
fn write_if_changed(dir: &Path, name: &str, content: &str) -> Result<(), SandboxError> {
    let path = dir.join(name);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| setup("write into the Python environment", format!("{}: {e}", dir.display())))?;
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&staging, content).map_err(|e| setup("write into the Python environment", format!("{}: {e}", staging.display())))?;
    std::fs::rename(&staging, &path).map_err(|e| setup("write into the Python environment", format!("{}: {e}", path.display())))
}

fn run(command: &mut std::process::Command, step: &'static str) -> Result<(), SandboxError> {
    let output = command.output().map_err(|e| setup(step, e))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(setup(step, tail.into_iter().rev().collect::<Vec<_>>().join("\n")))
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(to).map_err(|e| setup("copy into the image", e))?;
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    run(std::process::Command::new("cp").arg("-a").arg(source).arg(to), "copy into the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_whose_host_directory_is_gone_refuses_to_open_and_says_how_to_rebuild() {
        let images = tempfile::tempdir().expect("tempdir");
        let built = build_base(images.path(), "img", "1", &mut |_| {}).expect("the base image builds");
        assert!(Image::open(&built.dir).is_ok());
        let gone = images.path().join("a-cached-venv-since-deleted");
        let mut manifest = built.manifest.clone();
        manifest.host_binds.push((gone.clone(), PathBuf::from("/opt/jupyter")));
        std::fs::write(built.dir.join("manifest.json"), serde_json::to_vec(&manifest).expect("serializes")).expect("rewrite");
        let err = Image::open(&built.dir).expect_err("a bind source is missing").to_string();
        assert!(err.contains(&gone.display().to_string()) && err.contains("datasandbox image build base --name img"), "{err}");
    }
}
