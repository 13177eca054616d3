//! The printer of a pixel-streamed instance: CUPS's scheduler (Debian's `cupsd`), run by the
//! workspace user with its configuration under `/tmp/cups`, with one queue, `Print`, the
//! default. Its PPD says the printer takes PDF as is, so what Chromium prints arrives
//! unchanged at the queue's backend, which writes it into the session's print folder
//! (`/run/print`, a host directory of the instance). From there a printout reaches the user's
//! device only through the session page, and only if the stack enables
//! `PRINTING_TO_LOCAL_DEVICE`; otherwise it never leaves the platform.

use std::path::Path;

/// Where programs in the instance reach the scheduler (`CUPS_SERVER`).
pub const CUPS_SOCKET: &str = "/tmp/cups/cups.sock";
const ROOT: &str = "/tmp/cups";
const CUPSD: &str = "/usr/sbin/cupsd";

/// The queue's backend: the job's document, whole, into the print folder.
const BACKEND: &str = r#"#!/bin/sh
# DataSandbox's CUPS backend: each job's PDF into the session's print folder.
if [ $# -eq 0 ]; then echo 'direct datasandbox "Unknown" "DataSandbox print folder"'; exit 0; fi
umask 077
out="/run/print/job-$1.pdf"
cat "${6:-/dev/stdin}" > "$out.part" && mv "$out.part" "$out"
"#;

const PPD: &str = include_str!("printer.ppd");

/// Starts the scheduler if this instance has a print folder and CUPS is installed. Errors are
/// reported and leave the session without a printer, nothing else.
pub fn start_printer() {
    if !Path::new("/run/print").is_dir() || !Path::new(CUPSD).exists() {
        return;
    }
    if let Err(err) = configure() {
        eprintln!("home-sync: cannot configure the printer: {err}");
        return;
    }
    let spawned = std::process::Command::new(CUPSD)
        .args(["-f", "-c", &format!("{ROOT}/cupsd.conf"), "-s", &format!("{ROOT}/cups-files.conf")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut scheduler) => drop(std::thread::spawn(move || scheduler.wait())),
        Err(err) => eprintln!("home-sync: cannot start the printer: {err}"),
    }
}

fn configure() -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in ["bin/backend", "spool", "tmp", "cache", "state", "ppd"] {
        std::fs::create_dir_all(format!("{ROOT}/{dir}"))?;
    }
    // CUPS's own filters and helpers, beside the one backend it may use.
    for dir in ["filter", "daemon", "cgi-bin", "driver", "monitor", "notifier"] {
        let link = format!("{ROOT}/bin/{dir}");
        if !Path::new(&link).exists() {
            std::os::unix::fs::symlink(format!("/usr/lib/cups/{dir}"), link)?;
        }
    }
    let backend = format!("{ROOT}/bin/backend/datasandbox");
    std::fs::write(&backend, BACKEND)?;
    std::fs::set_permissions(&backend, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(format!("{ROOT}/ppd/Print.ppd"), PPD)?;
    std::fs::write(
        format!("{ROOT}/cups-files.conf"),
        format!(
            "ServerRoot {ROOT}\nRequestRoot {ROOT}/spool\nTempDir {ROOT}/tmp\nCacheDir {ROOT}/cache\nStateDir {ROOT}/state\n\
             ServerBin {ROOT}/bin\nDataDir /usr/share/cups\nDocumentRoot /usr/share/cups/doc-root\nErrorLog {ROOT}/error_log\n\
             AccessLog {ROOT}/access_log\nPageLog {ROOT}/page_log\nUser user\nGroup user\nFileDevice No\n"
        ),
    )?;
    // Only the instance's own programs reach it, on a Unix socket; no network listener.
    std::fs::write(
        format!("{ROOT}/cupsd.conf"),
        format!(
            "Listen {CUPS_SOCKET}\nLogLevel warn\nBrowsing Off\nDefaultAuthType None\nWebInterface No\n\
             <Location />\nOrder allow,deny\nAllow all\n</Location>\n<Policy default>\n<Limit All>\nOrder deny,allow\n</Limit>\n</Policy>\n"
        ),
    )?;
    std::fs::write(
        format!("{ROOT}/printers.conf"),
        "<DefaultPrinter Print>\nInfo DataSandbox print folder\nDeviceURI datasandbox:/\nState Idle\nAccepting Yes\nShared No\n</DefaultPrinter>\n",
    )
}
