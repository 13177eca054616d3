//! Images: an immutable, versioned directory holding a root filesystem and a manifest with
//! the image's application catalog. The `base` recipe builds the root from the host's own
//! packages: a skeleton whose `/usr` is the host's `/usr`, bound read-only at start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{SandboxError, WORKSPACE_UID, setup};

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
        let manifest = serde_json::from_str(&text).map_err(|e| setup("read the image manifest", e))?;
        Ok(Image { dir: dir.to_owned(), manifest })
    }
}

/// Builds the `base` image under `images/<name>/<version>/`, reporting each step.
pub fn build_base(images: &Path, name: &str, version: &str, progress: &mut dyn FnMut(&str)) -> Result<Image, SandboxError> {
    let dir = images.join(name).join(version);
    if dir.join("manifest.json").exists() {
        return Err(setup("build the image", format!("{} already exists; images are immutable, build a new version", dir.display())));
    }
    let staging = images.join(name).join(format!(".{version}.building"));
    let _ = std::fs::remove_dir_all(&staging);
    let root = staging.join("rootfs");
    progress("making the root skeleton");
    for directory in ["usr", "etc", "tmp", "run", "home/user", "dev", "proc", "data", "opt", "var/tmp", "root"] {
        std::fs::create_dir_all(root.join(directory)).map_err(|e| setup("build the image", e))?;
    }
    // Merged /usr, as on Debian 12: the top-level directories are links into /usr.
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        if Path::new("/").join(target).exists() {
            std::os::unix::fs::symlink(target, root.join(link)).map_err(|e| setup("build the image", e))?;
        }
    }
    progress("writing /etc");
    let etc = root.join("etc");
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
    let manifest = Manifest {
        name: name.to_owned(),
        version: version.to_owned(),
        recipe: "base".into(),
        host_binds: vec![(PathBuf::from("/usr"), PathBuf::from("/usr"))],
        applications: vec![Application {
            name: "shell".into(),
            display_name: "Shell".into(),
            command: "/bin/bash".into(),
            arguments: vec![],
        }],
    };
    std::fs::write(staging.join("manifest.json"), serde_json::to_vec_pretty(&manifest).expect("serializes"))
        .map_err(|e| setup("build the image", e))?;
    progress("sealing the image");
    std::fs::rename(&staging, &dir).map_err(|e| setup("build the image", e))?;
    Ok(Image { dir, manifest })
}
