//! One long-lived `nft -i` for the firewall's per-instance elements: an instance start adds
//! an element and its end deletes it, without starting a process.
//!
//! Interactive `nft` prints nothing for a change that worked and an error for one that did
//! not. Its standard output and error share one pipe here, so what it prints comes in the
//! order it did it. Each command is followed by a listing of a small set that always exists
//! (`endpoint_ports`): whatever comes before that listing is the command's error.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one command may take before the session is taken for broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Session {
    child: Child,
    input: ChildStdin,
    output: mpsc::Receiver<Vec<u8>>,
    /// The table whose `endpoint_ports` set marks the end of each command's output.
    table: String,
}

impl Session {
    pub fn start(table: &str) -> std::io::Result<Session> {
        let (reader, writer) = std::io::pipe()?;
        let mut command = Command::new("nft");
        command.arg("-i").stdin(Stdio::piped()).stdout(writer.try_clone()?).stderr(writer);
        crate::host::in_new_session(&mut command);
        let mut child = command.spawn()?;
        // The writing ends now live only in nft: its exit ends the reader.
        drop(command);
        let input = child.stdin.take().ok_or_else(|| std::io::Error::other("nft has no input"))?;
        let (sender, output) = mpsc::channel();
        std::thread::Builder::new().name("nft".into()).spawn(move || {
            let mut reader = reader;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        })?;
        Ok(Session { child, input, output, table: table.to_owned() })
    }

    /// Runs one command. `Ok(Err(message))` is nft refusing it; `Err` is the session broken
    /// (it must not be used again).
    pub fn run(&mut self, command: &str) -> std::io::Result<Result<(), String>> {
        while self.output.try_recv().is_ok() {}
        let line = command.trim_end().replace('\n', " ");
        write!(self.input, "{line}\nlist set inet {} endpoint_ports\n", self.table)?;
        self.input.flush()?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut printed = Vec::new();
        // The listing ends with the table's closing brace, alone on its line.
        while !printed.ends_with(b"\n}\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => printed.extend_from_slice(&chunk),
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "nft did not answer")),
            }
        }
        let printed = String::from_utf8_lossy(&printed);
        let listing = format!("table inet {} {{", self.table);
        let before = printed.rfind(&listing).map_or(printed.as_ref(), |at| &printed[..at]).trim();
        Ok(if before.is_empty() { Ok(()) } else { Err(before.to_owned()) })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
