//! `datasandbox service install`: the systemd unit that runs `serve` with no terminal.
//!
//! What it asks of systemd: start after the network, restart on failure (not after a clean
//! stop), reload (SIGHUP: the certificate is read again) without a restart, and time for a
//! clean stop to end every session's instance. Logs go to the journal as JSON (`serve` writes
//! JSON when its standard error is not a terminal).
//!
//! Hardening, chosen not to break the sandbox: the server is root because it makes namespaces,
//! veths, nftables tables, cgroups and mounts for every instance, so capability bounding,
//! `ProtectKernelTunables` (each instance's network sysctls), `ProtectControlGroups`,
//! `RestrictNamespaces`, `PrivateDevices` (loop devices and `/dev/fuse` for notebook
//! volumes) and `NoNewPrivileges` (setuid helpers such as `fusermount3`) stay off. What is on
//! keeps it away from what it never touches: `/usr`, `/boot` and `/etc` read-only, home
//! directories read-only (unless the data directory is under one), a private `/tmp`, no
//! kernel log or clock changes, no realtime scheduling, native system calls only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::SpecArgs;

/// The unit's name under the unit directory.
pub const UNIT: &str = "datasandbox.service";

/// The unit that runs `binary … serve` on `data_dir` (both absolute).
pub fn unit_text(binary: &Path, data_dir: &Path, args: &SpecArgs) -> String {
    let mut serve = vec![quote(&binary.display().to_string()), "--data-dir".into(), quote(&data_dir.display().to_string()), "serve".into()];
    if let Some(spec) = &args.spec {
        serve.extend(["--spec".into(), quote(&spec.display().to_string())]);
    }
    for setting in &args.overrides {
        serve.extend(["-c".into(), quote(setting)]);
    }
    if let Some(node) = &args.node {
        serve.extend(["--node".into(), quote(node)]);
    }
    let under_home = data_dir.starts_with("/home") || data_dir.starts_with("/root");
    let home = if under_home { "# ProtectHome is off: the data directory is under a home directory.\n" } else { "ProtectHome=read-only\n" };
    format!(
        "# Written by `datasandbox service install`; see its notes with `datasandbox service --help`.
[Unit]
Description=DataSandbox: isolated, audited workspaces for sensitive data
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={serve}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
# A clean stop ends every session's instance before the server exits.
KillMode=mixed
TimeoutStopSec=120
Environment=DATASANDBOX_LOG=info
LimitNOFILE=65536
ProtectSystem=full
{home}ReadWritePaths={data}
PrivateTmp=yes
ProtectKernelLogs=yes
ProtectClock=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
",
        serve = serve.join(" "),
        data = quote(&data_dir.display().to_string()),
    )
}

/// A word of a unit's command line, quoted when it must be.
fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,@+".contains(c)) {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$"))
    }
}

/// Writes the unit into `unit_dir` (refusing to replace a different one unless `force`).
pub fn install(data_dir: &Path, unit_dir: &Path, binary: Option<&Path>, args: &SpecArgs, force: bool) -> ExitCode {
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(1)
    };
    let binary = match binary.map(Path::to_owned).map_or_else(std::env::current_exe, Ok) {
        Ok(binary) => binary,
        Err(err) => return fail(format!("cannot tell where this binary is ({err}); pass --binary")),
    };
    let (Ok(binary), Ok(data_dir)) = (std::path::absolute(&binary), std::path::absolute(data_dir)) else {
        return fail("the binary's and the data directory's paths cannot be made absolute".into());
    };
    // A unit file and a command line are readable by every user of the host.
    if let Some(secret) =
        args.overrides.iter().find(|o| o.split('=').next().is_some_and(|key| key.contains("secret") || key.contains("password")))
    {
        let key = secret.split('=').next().unwrap_or_default();
        return fail(format!("`{key}` is a secret: put it in the spec file (owner-only), not in the unit's command line"));
    }
    let unit = unit_text(&binary, &data_dir, args);
    let path: PathBuf = unit_dir.join(UNIT);
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing == unit => {}
        Ok(_) if !force => return fail(format!("`{}` exists and differs; pass --force to replace it", path.display())),
        _ => {
            if let Err(err) = std::fs::create_dir_all(unit_dir).and_then(|()| std::fs::write(&path, &unit)) {
                return fail(format!("cannot write `{}`: {err}", path.display()));
            }
        }
    }
    println!("{}", path.display());
    if !data_dir.join("datasandbox.toml").exists() {
        eprintln!(
            "`{}` holds no spec yet: run `datasandbox --data-dir {} up` once (it writes the defaults and deploys them), stop it, then:",
            data_dir.display(),
            data_dir.display()
        );
    }
    eprintln!("systemctl daemon-reload && systemctl enable --now datasandbox   # logs: journalctl -u datasandbox");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_serves_the_data_directory_with_its_settings_quoted() {
        let args = SpecArgs { spec: None, overrides: vec!["server.public_url=https://a b".into()], node: Some("a".into()) };
        let unit = unit_text(Path::new("/usr/bin/datasandbox"), Path::new("/var/lib/datasandbox"), &args);
        assert!(
            unit.contains(
                "ExecStart=/usr/bin/datasandbox --data-dir /var/lib/datasandbox serve -c \"server.public_url=https://a b\" --node a\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("ProtectHome=read-only") && unit.contains("ReadWritePaths=/var/lib/datasandbox"), "{unit}");
        let unit = unit_text(
            Path::new("/usr/bin/datasandbox"),
            Path::new("/root/sandbox"),
            &SpecArgs { spec: None, overrides: vec![], node: None },
        );
        assert!(!unit.contains("ProtectHome=read-only"), "{unit}");
        assert_eq!(quote("100%$"), "\"100%%$$\"");
    }
}
