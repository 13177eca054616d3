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

impl Server {
    /// Builds `images` (recipes), then starts `up` with `overrides` and a VPC range of its own
    /// (`10.<octet>.0.0/16`, so benchmarks run beside tests).
    pub fn start(images: &[&str], octet: u32, overrides: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        for recipe in images {
            let built = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
                .arg("--data-dir")
                .arg(dir.path())
                .args(["image", "build", recipe])
                .output()
                .expect("build an image");
            assert!(built.status.success(), "image {recipe}: {}", String::from_utf8_lossy(&built.stderr));
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_datasandbox"));
        command.arg("--data-dir").arg(dir.path()).args(["up", "-c", "server.api_listen=127.0.0.1:0", "-c"]);
        command.arg(format!("vpc_cidr=10.{octet}.0.0/16"));
        for o in overrides {
            command.args(["-c", o]);
        }
        let mut child = command
            .env("DATASANDBOX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BENCH_SERVER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start the server");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
        let api = ready.split_whitespace().find_map(|w| w.strip_prefix("api=http://")).expect("api address").to_owned();
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
