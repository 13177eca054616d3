//! Embeds noVNC (the pixel-stream client, vendored from npm by `npm ci --prefix web`) into the
//! gateway, so the binary serves it without a web root. Without `web/node_modules` the
//! gateway builds with no client and its session page says how to add it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let novnc = manifest.join("../../web/node_modules/@novnc/novnc");
    println!("cargo::rerun-if-changed={}", novnc.display());
    println!("cargo::rerun-if-changed={}", manifest.join("../../web/package-lock.json").display());
    let mut files = Vec::new();
    for tree in ["core", "vendor"] {
        collect(&novnc.join(tree), &novnc, &mut files);
    }
    if novnc.join("LICENSE.txt").is_file() {
        files.push(("LICENSE.txt".to_owned(), novnc.join("LICENSE.txt")));
    }
    files.sort();
    let mut out =
        String::from("/// noVNC's files: path under `/assets/novnc/`, contents.\npub(crate) static NOVNC: &[(&str, &[u8])] = &[\n");
    for (relative, path) in &files {
        let absolute = path.canonicalize().expect("a listed file exists");
        writeln!(out, "    ({relative:?}, include_bytes!({:?})),", absolute.display().to_string()).expect("writing to a string");
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("novnc.rs");
    std::fs::write(target, out).expect("write novnc.rs");
}

/// Every `.js` file under `dir`, with its path relative to `root`.
fn collect(dir: &Path, root: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, root, files);
        } else if path.extension().is_some_and(|e| e == "js") {
            let relative = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
            files.push((relative, path));
        }
    }
}
