//! Instance start-up and memory, against bubblewrap (Debian's `bwrap`) running the same
//! command in the same run. `cargo bench -p datasandbox --bench instances` (as root).
//!
//! DataSandbox's figure covers everything an instance gets: seven namespaces, cgroup limits,
//! a veth link with its addresses and firewall element, the read-only root, seccomp. bwrap's
//! covers its own `--unshare-all` sandbox with a read-only /usr (no cgroups, no link).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox::network::Link;
use sandbox::{InstanceSpec, Limits, Sandbox};

const RUNS: usize = 100;
const IDLE_FOR_MEMORY: usize = 20;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn mem_available_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemAvailable")
}

fn main() {
    let images = tempfile::tempdir().expect("temp dir");
    let image = sandbox::image::build_base(images.path(), "base", "1", &mut |_| {}).expect("image");
    let sandbox = Sandbox::new(18752, sandbox::ids::IdPool::default()).expect("firewall (run as root with nftables)");
    let spec = |n: usize| {
        let id = format!("b{:05x}{n:05}", std::process::id() % 0x10000);
        let (host, private) = sandbox::link_addresses(Ipv4Addr::new(10, 250, 0, 0), 16, n as u32).expect("room");
        InstanceSpec {
            link: Link::new(&id, host, private),
            id,
            rootfs: image.rootfs(),
            read_only_binds: image.manifest.host_binds.clone(),
            writable_binds: Vec::new(),
            hostname: "bench".into(),
            limits: Limits { vcpus: 1, memory_bytes: 256 << 20, pids: 128 },
            command: vec!["/bin/sleep".into(), "3600".into()],
            env: Vec::new(),
            self_exe: PathBuf::from(env!("CARGO_BIN_EXE_datasandbox")),
            files: Vec::new(),
            log: None,
            terminals: false,
            service_group: false,
            service_view: None,
            home_folders: Vec::new(),
        }
    };
    println!("Instance benchmark: {RUNS} create → first process running, then destroy; memory over {IDLE_FOR_MEMORY} idle instances");

    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for n in 0..RUNS {
        let spec = spec(n);
        let started = Instant::now();
        let instance = sandbox.create(&spec).expect("create");
        starts.push(started.elapsed());
        let stopped = Instant::now();
        sandbox.destroy(instance).expect("destroy");
        stops.push(stopped.elapsed());
    }
    starts.sort_unstable();
    stops.sort_unstable();
    println!(
        "datasandbox  start p50 {:6.1} ms  p95 {:6.1} ms   destroy p50 {:6.1} ms",
        percentile(&starts, 0.5),
        percentile(&starts, 0.95),
        percentile(&stops, 0.5)
    );

    let Ok(bwrap) = which("bwrap") else {
        println!("bwrap        not installed (apt-get install bubblewrap): no comparison");
        return;
    };
    let mut bwrap_starts = Vec::new();
    for _ in 0..RUNS {
        let (mut child, started) = spawn_bwrap(&bwrap);
        bwrap_starts.push(started);
        let _ = child.kill();
        let _ = child.wait();
    }
    bwrap_starts.sort_unstable();
    println!("bwrap        start p50 {:6.1} ms  p95 {:6.1} ms", percentile(&bwrap_starts, 0.5), percentile(&bwrap_starts, 0.95));

    let before = mem_available_kib();
    let idle: Vec<_> = (0..IDLE_FOR_MEMORY).map(|n| sandbox.create(&spec(RUNS + n)).expect("create")).collect();
    std::thread::sleep(Duration::from_millis(500));
    let ours = before.saturating_sub(mem_available_kib()) as f64 / IDLE_FOR_MEMORY as f64;
    for instance in idle {
        sandbox.destroy(instance).expect("destroy");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = mem_available_kib();
    let children: Vec<_> = (0..IDLE_FOR_MEMORY).map(|_| spawn_bwrap(&bwrap).0).collect();
    std::thread::sleep(Duration::from_millis(500));
    let theirs = before.saturating_sub(mem_available_kib()) as f64 / IDLE_FOR_MEMORY as f64;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("host memory per idle instance: datasandbox {:.0} KiB, bwrap {:.0} KiB (MemAvailable difference, noisy)", ours, theirs);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH").unwrap_or_default().split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.exists()).ok_or(())
}

/// Starts a shell under bwrap that says `ready` and then sleeps; returns once it said so.
fn spawn_bwrap(bwrap: &PathBuf) -> (std::process::Child, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bwrap)
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
        ])
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/sh", "-c", "echo ready; exec sleep 3600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bwrap");
    let mut ready = [0u8; 6];
    child.stdout.as_mut().expect("piped").read_exact(&mut ready).expect("bwrap's shell said ready");
    (child, started.elapsed())
}
