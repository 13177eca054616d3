//! A PostgreSQL cluster of a test's own: Debian's PostgreSQL, `initdb` into a temporary
//! directory, on a loopback port, for tests that need one whatever backends the run uses.

use std::path::PathBuf;
use std::process::Command;

use crate::support::saml::free_port;

/// A PostgreSQL cluster of its own, stopped and removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // PostgreSQL refuses to run as root: the cluster belongs to Debian's `postgres` user.
        assert!(Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().expect("chown").success());
        let data = dir.path().join("data");
        let initdb = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"])
            .output()
            .expect("initdb");
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        let started = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl start");
        assert!(started.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&started.stderr));
        Cluster { dir, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL, without a database.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("metadata.url=postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Cluster {
    /// Restarts the server (`pg_ctl restart -m fast`: every connection is cut).
    pub fn restart(&self) {
        let restarted = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("restart")
            // The new server must not inherit our pipes: `output` would wait for it to exit.
            .stdin(std::process::Stdio::null())
            .output()
            .expect("pg_ctl restart");
        assert!(restarted.status.success(), "pg_ctl restart: {}", String::from_utf8_lossy(&restarted.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
