//! A release server for a benchmark: its own data directory with the images it needs, `up` on
//! an ephemeral port, quiet logs; stopped with SIGTERM when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::http;

pub struct Server {
    pub dir: tempfile::TempDir,
    pub api: String,
    child: Child,
}

/// How a node starts: `up` deploys the spec (writing the defaults on a fresh data directory);
/// `serve` joins an environment another node deployed, with that node's spec and master key.
pub enum Start<'a> {
    Up,
    /// `up` on this spec (`datasandbox.toml`) instead of the defaults.
    UpWithSpec(&'a str),
    JoinAs {
        first_node: &'a Server,
    },
}

/// Everything a benchmark's server may need beyond [`Server::start`]'s arguments.
pub struct Launch<'a> {
    pub images: &'a [&'a str],
    /// The VPC range is `10.<octet>.0.0/16`: each server on the host needs its own.
    pub octet: u32,
    pub overrides: Vec<String>,
    pub env: Vec<(String, String)>,
    pub start: Start<'a>,
}

impl Server {
    /// Builds `images` (recipes), then starts `up` with `overrides` and a VPC range of its own
    /// (`10.<octet>.0.0/16`, so benchmarks run beside tests).
    pub fn start(images: &[&str], octet: u32, overrides: &[&str]) -> Server {
        let overrides = overrides.iter().map(|o| (*o).to_owned()).collect();
        Server::launch(Launch { images, octet, overrides, env: Vec::new(), start: Start::Up })
    }

    /// Builds the images, then starts the server as `launch` says. A joining node gets the
    /// first node's spec and master key (mode 0600) before it starts, as an operator would copy
    /// them: nodes sharing a metadata store refuse a master key the others do not share.
    pub fn launch(launch: Launch) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        for recipe in launch.images {
            let built = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
                .arg("--data-dir")
                .arg(dir.path())
                .args(["image", "build", recipe])
                .output()
                .expect("build an image");
            assert!(built.status.success(), "image {recipe}: {}", String::from_utf8_lossy(&built.stderr));
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_datasandbox"));
        command.arg("--data-dir").arg(dir.path());
        match launch.start {
            Start::Up => {
                command.arg("up");
            }
            Start::UpWithSpec(spec) => {
                std::fs::write(dir.path().join("datasandbox.toml"), spec).expect("write the spec");
                command.arg("up");
            }
            Start::JoinAs { first_node } => {
                for file in ["datasandbox.toml", "master.key"] {
                    std::fs::copy(first_node.dir.path().join(file), dir.path().join(file)).expect("copy the first node's spec and key");
                }
                std::fs::set_permissions(dir.path().join("master.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .expect("protect the master key");
                command.arg("serve");
            }
        }
        command.args(["-c", "server.api_listen=127.0.0.1:0", "-c"]).arg(format!("vpc_cidr=10.{}.0.0/16", launch.octet));
        for o in &launch.overrides {
            command.args(["-c", o]);
        }
        let mut child = command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("DATASANDBOX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BENCH_SERVER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start the server");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
        let Some(api) = ready.split_whitespace().find_map(|w| w.strip_prefix("api=http://")) else {
            let _ = child.wait();
            panic!("the server did not start (rerun with BENCH_SERVER_LOG=1 to see its log): `{}`", ready.trim());
        };
        let api = api.to_owned();
        Server { dir, api, child }
    }

    /// An action as the local operator; fails the benchmark on an error.
    pub fn call(&self, action: &str, input: Value) -> Value {
        let reply = http::unix(&self.dir.path().join("control.sock")).expect("connect").call(action, &input, None).expect("call");
        assert_eq!(reply.status, 200, "{action}: {}", String::from_utf8_lossy(&reply.body));
        reply.json()
    }

    /// The CLI on this server's data directory; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_datasandbox")).arg("--data-dir").arg(self.dir.path()).args(args).output().expect("cli");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn get(&self, path: &str, cookie: &str) -> http::Reply {
        http::tcp(&self.api).expect("connect").request("GET", path, &[("cookie", cookie)], b"").expect("request")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A /16 for one server's instance links, claimed the way the integration tests claim theirs
/// (a lock file per /16 under the temporary directory, held while the claim lives, and passing
/// over a /16 the host already has an address in), so a benchmark can run beside the tests.
pub struct Vpc {
    pub octet: u32,
    _lock: std::fs::File,
}

impl Vpc {
    pub fn claim() -> Vpc {
        let dir = std::env::temp_dir().join("datasandbox-test-vpcs");
        std::fs::create_dir_all(&dir).expect("make the directory of vpc locks");
        let addresses = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr show");
        let addresses = String::from_utf8_lossy(&addresses.stdout);
        let start = std::process::id();
        for i in 0..150 {
            let octet = 100 + (start + i) % 150;
            if addresses.contains(&format!(" 10.{octet}.")) {
                continue;
            }
            let lock = std::fs::File::options().create(true).truncate(false).write(true).open(dir.join(format!("10.{octet}.lock")));
            let lock = lock.expect("open a vpc lock file");
            if lock.try_lock().is_ok() {
                return Vpc { octet, _lock: lock };
            }
        }
        panic!("no /16 among 10.100–10.249 is free for a benchmark server's instance links");
    }
}
