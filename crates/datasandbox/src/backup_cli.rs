//! `datasandbox backup` and `restore`. A backup asks the running server (on the control
//! socket, with its progress streamed back), or, when nothing serves the data directory, takes
//! the directory's lock and copies it itself. A restore never runs on a served directory: it
//! makes a new one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::cli::SpecArgs;
use crate::client::for_terminal;

/// `datasandbox backup --to DIR (--passphrase-file F | --without-keys)`.
pub async fn backup(data_dir: &Path, to: &Path, passphrase_file: Option<&Path>, without_keys: bool, spec: &SpecArgs) -> ExitCode {
    let passphrase = match (passphrase_file, without_keys) {
        (Some(file), false) => match read_passphrase(file) {
            Ok(passphrase) => Some(passphrase),
            Err(message) => return failed(&message),
        },
        (None, true) => None,
        _ => {
            return failed(
                "say what becomes of the keys: --passphrase-file FILE seals them in the backup, --without-keys leaves them out \
                 (keep master.key apart then: nothing in the backup can be read without it)",
            );
        }
    };
    let Ok(to) = std::path::absolute(to) else { return failed(&format!("`{}` is not a usable path", to.display())) };
    let socket = data_dir.join("control.sock");
    match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => match backup_through_server(stream, &to, passphrase.as_deref()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => failed(&message),
        },
        Err(_) => backup_offline(data_dir, &to, passphrase, spec).await,
    }
}

fn read_passphrase(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read the passphrase file `{}`: {e}", file.display()))?;
    let passphrase = text.trim_end_matches(['\n', '\r']).to_owned();
    if passphrase.chars().count() < control::backup::MIN_PASSPHRASE {
        return Err(format!("the passphrase in `{}` is shorter than {} characters", file.display(), control::backup::MIN_PASSPHRASE));
    }
    Ok(passphrase)
}

fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

async fn backup_through_server(stream: tokio::net::UnixStream, to: &Path, passphrase: Option<&str>) -> Result<(), String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("the control socket did not answer: {e}"))?;
    tokio::spawn(connection);
    let body = json!({ "To": to.display().to_string(), "Passphrase": passphrase }).to_string();
    let request = hyper::Request::post("/operator/backup")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("the backup request failed: {e}"))?;
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the server stopped answering: {e}"))?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
            if let Some(progress) = event["Progress"].as_str() {
                eprintln!("{progress}");
            } else if let Some(error) = event["Error"].as_str() {
                return Err(error.to_owned());
            } else if !event["Backup"].is_null() {
                // The server writes the backup in its own view of the file system: a service's
                // private /tmp is not this shell's.
                if !to.join("manifest.json").is_file() {
                    return Err(format!(
                        "the server wrote the backup into `{}` as it sees it, which is not where this shell sees it \
                         (a service's private /tmp?): give a directory outside /tmp and /var/tmp",
                        to.display()
                    ));
                }
                println!("{}", for_terminal(&serde_json::to_string_pretty(&event["Backup"]).unwrap_or_default()));
                return Ok(());
            }
        }
    }
    Err("the server ended the backup without saying how it went; see its log".into())
}

/// Nothing serves the data directory: take its lock (so nothing starts meanwhile) and copy it.
async fn backup_offline(data_dir: &Path, to: &Path, passphrase: Option<String>, args: &SpecArgs) -> ExitCode {
    let lock = match std::fs::OpenOptions::new().write(true).open(data_dir.join("lock")) {
        Ok(lock) => lock,
        Err(err) => return failed(&format!("`{}` is not a data directory ({err}); pass --data-dir", data_dir.display())),
    };
    if lock.try_lock().is_err() {
        return failed(&format!(
            "a server holds `{}` but its control socket does not answer; wait until it is ready, or stop it",
            data_dir.display()
        ));
    }
    let path = args.spec.clone().unwrap_or_else(|| data_dir.join("datasandbox.toml"));
    let overrides = args.all_overrides();
    let read = std::fs::read_to_string(&path).map_err(|e| e.to_string());
    let spec = match read.and_then(|t| model::spec::Spec::parse(&t, &overrides).map_err(|e| e.to_string())) {
        Ok(spec) => spec,
        Err(err) => return failed(&format!("cannot read the spec `{}`: {err}", path.display())),
    };
    let keys = passphrase.map_or(control::backup::Keys::LeftOut, control::backup::Keys::Sealed);
    let mut progress = |line: &str| eprintln!("{line}");
    match control::backup::offline(data_dir, &spec, to, keys, &mut progress).await {
        Ok(written) => {
            let summary = json!({
                "Directory": written.dir.display().to_string(), "Files": written.files, "Bytes": written.bytes,
                "Objects": written.objects, "Keys": written.keys, "Skipped": written.skipped,
            });
            println!("{}", for_terminal(&serde_json::to_string_pretty(&summary).unwrap_or_default()));
            ExitCode::SUCCESS
        }
        Err(message) => failed(&message),
    }
}

/// `datasandbox restore --from DIR` into `--data-dir`, which must be new.
pub async fn restore(data_dir: &Path, from: &Path, passphrase_file: Option<&Path>, master_key: Option<&Path>) -> ExitCode {
    let proof = match (passphrase_file, master_key) {
        (Some(file), _) => match read_passphrase(file) {
            Ok(passphrase) => control::backup::Proof::Passphrase(passphrase),
            Err(message) => return failed(&message),
        },
        (None, Some(file)) => match std::fs::read(file) {
            Ok(key) => control::backup::Proof::MasterKey(key),
            Err(err) => return failed(&format!("cannot read the master key `{}`: {err}", file.display())),
        },
        (None, None) => {
            return failed("give --passphrase-file (the backup's keys are sealed) or --master-key (it was made --without-keys)");
        }
    };
    let target: PathBuf = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut progress = |line: &str| eprintln!("{line}");
    match control::backup::restore(from, &target, &proof, &mut progress).await {
        Ok(restored) => {
            for line in &restored.trail {
                eprintln!("{line}");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "DataDirectory": target.display().to_string(), "Files": restored.files, "Objects": restored.objects,
                    "Next": format!("datasandbox --data-dir {} serve", target.display()),
                }))
                .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(message) => failed(&message),
    }
}
