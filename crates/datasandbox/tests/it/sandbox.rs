//! Instances attacked from inside: no route out, no escape, limits that hold, and teardown
//! that leaves nothing. These need root, namespaces and nftables; CI provides them.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandbox::network::{Firewall, Link};
use sandbox::{Instance, InstanceSpec, Limits, Sandbox};

use crate::support::server::BIN;

pub const ENDPOINT_PORT: u16 = 18751;

pub struct Fixture {
    pub sandbox: Sandbox,
    pub image: sandbox::image::Image,
    _images: tempfile::TempDir,
    vpc: crate::support::server::Vpc,
    next: u32,
}

impl Fixture {
    pub fn new() -> Fixture {
        let images = tempfile::tempdir().expect("temp dir");
        let image = sandbox::image::build_base(images.path(), "base", "1", &mut |_| {}).expect("build the base image");
        let sandbox =
            Sandbox::new(ENDPOINT_PORT, sandbox::ids::IdPool::default()).expect("install the firewall table (needs root and nftables)");
        Fixture { sandbox, image, _images: images, vpc: crate::support::server::Vpc::claim(), next: 0 }
    }

    pub fn spec(&mut self, command: &[&str], limits: Limits) -> InstanceSpec {
        self.next += 1;
        let (host, instance) = sandbox::link_addresses(self.vpc.network(), 16, self.next).expect("room in a /16");
        let id = format!("t{:x}{}", std::process::id(), self.next);
        InstanceSpec {
            link: Link::new(&id, host, instance),
            id,
            rootfs: self.image.rootfs(),
            read_only_binds: self.image.manifest.host_binds.clone(),
            writable_binds: Vec::new(),
            hostname: "instance".into(),
            limits,
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("DS_USER_NAME".into(), "alice".into())],
            self_exe: PathBuf::from(BIN),
            files: vec![("credential".into(), b"not-a-real-credential".to_vec())],
            log: None,
            terminals: false,
            service_group: false,
            service_view: None,
            home_folders: Vec::new(),
        }
    }

    pub fn start(&mut self, command: &[&str]) -> Instance {
        let spec = self.spec(command, Limits { vcpus: 1, memory_bytes: 256 << 20, pids: 128 });
        self.sandbox.create(&spec).expect("create the instance")
    }

    /// Runs a shell command inside; returns (exit code, stdout + stderr).
    pub fn sh(&self, instance: &Instance, script: &str) -> (i32, String) {
        let output = self.sandbox.exec(&instance.exec_target(), &["/bin/bash".into(), "-c".into(), script.into()]).expect("exec");
        (
            output.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    }
}

const IDLE: &[&str] = &["/bin/sleep", "3600"];

#[test]
fn an_instance_is_confined() {
    let mut fixture = Fixture::new();
    let instance = fixture.start(IDLE);
    let (code, status) =
        fixture.sh(&instance, "id -u; id -g; grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; hostname");
    assert_eq!(code, 0, "{status}");
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "1000", "{status}");
    for wanted in ["CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"] {
        assert!(status.contains(wanted), "missing `{wanted}` in\n{status}");
    }
    assert!(status.trim_end().ends_with("instance"), "{status}");
    // Root inside is an unprivileged uid outside.
    let host_uid = std::fs::read_to_string(format!("/proc/{}/status", instance.init_pid)).expect("status");
    assert!(host_uid.lines().any(|l| l.starts_with("Uid:") && l.contains(&instance.ids().workspace().to_string())), "{host_uid}");

    let attacks = [
        ("mount a filesystem", "mount -t tmpfs none /tmp"),
        ("unshare a user namespace", "unshare -U true"),
        ("unshare a mount namespace", "unshare -m true"),
        ("ptrace pid 1", "perl -e 'syscall(101, 16, 1, 0, 0) == -1 or exit 0; exit 1' && false"),
        ("write the image root", "touch /etc/owned"),
        ("write /usr", "touch /usr/owned"),
        ("read the host's data directory", &format!("ls {}", env!("CARGO_MANIFEST_DIR"))),
        ("read the host's root home", "ls /root/.cargo"),
        ("load a kernel module", "perl -e 'syscall(175, 0, 0, 0) == -1 or exit 0; exit 1' && false"),
        ("use bpf", "perl -e 'syscall(321, 0, 0, 0) == -1 or exit 0; exit 1' && false"),
        ("become root", "perl -e '$< = 0; $> = 0; exit($> == 0 ? 0 : 1)'"),
    ];
    for (what, script) in attacks {
        let (code, output) = fixture.sh(&instance, script);
        assert_ne!(code, 0, "{what} succeeded inside an instance: {output}");
    }
    // What is meant to work does.
    let (code, output) =
        fixture.sh(&instance, "echo ok > /tmp/x && cat /tmp/x && echo home > ~/y && cat ~/y && cat /run/datasandbox/credential && echo && tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_USER_NAME=//p'");
    assert_eq!((code, output.as_str()), (0, "ok\nhome\nnot-a-real-credential\nalice\n"));
    fixture.sandbox.destroy(instance).expect("destroy");
}

#[test]
fn an_instance_has_no_way_out() {
    let mut fixture = Fixture::new();
    let a = fixture.start(IDLE);
    let b = fixture.start(IDLE);
    let forwarded_before = Firewall::forwarded_drops();

    // Routing: the link's /30 and nothing else; no name server.
    let (_, routes) = fixture.sh(&a, "cat /proc/net/route");
    let destinations: Vec<&str> = routes.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(destinations.len(), 1, "{routes}");
    assert_ne!(destinations[0], "00000000", "a default route exists:\n{routes}");
    let (code, _) = fixture.sh(&a, "test -e /etc/resolv.conf");
    assert_ne!(code, 0, "an instance has a resolver configuration");
    let (code, output) = fixture.sh(&a, "exec 3<>/dev/tcp/192.0.2.1/80");
    assert_ne!(code, 0);
    assert!(output.contains("Network is unreachable"), "{output}");

    // Servers on the host: loopback, the primary address, the link address off the endpoint port.
    let loopback = TcpListener::bind("127.0.0.1:0").expect("bind");
    let any = TcpListener::bind("0.0.0.0:0").expect("bind");
    let any_port = any.local_addr().expect("address").port();
    let primary = primary_address();
    let endpoint = TcpListener::bind((a.link.host_address, ENDPOINT_PORT)).expect("bind the endpoint port on a's link");
    let probes = [
        ("the host's loopback", format!("127.0.0.1/{}", loopback.local_addr().expect("address").port())),
        ("the host's primary address", format!("{primary}/{any_port}")),
        ("the link's host address off the endpoint port", format!("{}/{any_port}", a.link.host_address)),
        ("another instance", format!("{}/{ENDPOINT_PORT}", b.link.instance_address)),
        ("another link's host address", format!("{}/{ENDPOINT_PORT}", b.link.host_address)),
    ];
    for (what, target) in probes {
        let (code, output) = fixture.sh(&a, &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{target}'"));
        assert_ne!(code, 0, "{what} ({target}) is reachable from an instance: {output}");
    }
    // The endpoint on the instance's own link is the one thing reachable.
    let (code, output) = fixture.sh(&a, &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{ENDPOINT_PORT}'", a.link.host_address));
    assert_eq!(code, 0, "the endpoint is not reachable: {output}");
    drop(endpoint);

    // A packet with another instance's source address: even root of a's network namespace
    // (here, the host entering it) cannot get one to the endpoint.
    let endpoint_b = TcpListener::bind((a.link.host_address, ENDPOINT_PORT)).expect("bind");
    let spoof_bound = std::process::Command::new("nsenter")
        .args(["-t", &a.init_pid.to_string(), "-n", "sh", "-c"])
        .arg(format!(
            "ip addr add {spoofed}/32 dev eth0 && ip route replace {host}/32 dev eth0 src {spoofed} && timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{ENDPOINT_PORT}'; status=$?; ip route del {host}/32 dev eth0; ip addr del {spoofed}/32 dev eth0; exit $status",
            spoofed = b.link.instance_address,
            host = a.link.host_address
        ))
        .output()
        .expect("nsenter");
    assert_ne!(
        spoof_bound.status.code(),
        Some(0),
        "a packet with another instance's source address got through: {}",
        String::from_utf8_lossy(&spoof_bound.stderr)
    );
    drop(endpoint_b);

    assert_eq!(Firewall::forwarded_drops(), forwarded_before, "the host forwarded or tried to forward instance traffic");
    fixture.sandbox.destroy(a).expect("destroy");
    fixture.sandbox.destroy(b).expect("destroy");
}

fn primary_address() -> Ipv4Addr {
    let output = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().expect("ip addr");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|l| !l.contains(" ds-"))
        .find_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .expect("the host has a global IPv4 address")
}

#[test]
fn limits_hold_and_the_host_keeps_working() {
    let mut fixture = Fixture::new();
    let spec = fixture.spec(IDLE, Limits { vcpus: 1, memory_bytes: 128 << 20, pids: 64 });
    let instance = fixture.sandbox.create(&spec).expect("create");
    // A memory hog is killed inside its cgroup.
    let (code, _) = fixture.sh(&instance, "perl -e '$x = \"a\" x (400 * 1024 * 1024); print length($x)'");
    assert_ne!(code, 0, "a 400 MiB allocation survived a 128 MiB limit");
    // A fork bomb is held by the pids limit, and ends when the instance does.
    let started = Instant::now();
    let _ = fixture.sh(&instance, "timeout 3 bash -c ':(){ :|:& };:' >/dev/null 2>&1; true");
    let pids = instance.cgroup_paths().iter().find_map(|p| std::fs::read_to_string(p.join("pids.current")).ok()).unwrap_or_default();
    assert!(pids.trim().parse::<u32>().unwrap_or(0) <= 64, "pids.current = {pids}");
    // The host still runs processes promptly.
    let probe = Instant::now();
    assert!(std::process::Command::new("true").status().expect("true").success());
    assert!(probe.elapsed() < Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(30));
    fixture.sandbox.destroy(instance).expect("destroy");
}

#[test]
fn teardown_leaves_nothing_behind() {
    let mut fixture = Fixture::new();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let instance = fixture.start(IDLE);
        ids.push((instance.id.clone(), instance.init_pid, instance.link.clone(), instance.cgroup_paths()));
        fixture.sandbox.destroy(instance).expect("destroy");
    }
    let links = sandbox::network::leftover_links();
    let elements = Firewall::elements();
    for (id, pid, link, cgroups) in ids {
        assert!(!links.contains(&link.host_interface), "link {} of {id} is left", link.host_interface);
        assert!(
            !elements.contains(&format!("{} . {}", link.instance_address, link.host_address)),
            "firewall element of {id} is left:\n{elements}"
        );
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} of {id} is left");
        for cgroup in cgroups {
            assert!(!cgroup.exists(), "cgroup {} of {id} is left", cgroup.display());
        }
    }
}

/// The home folders a spec names are there, the workspace user's, when the command starts; one
/// that would lie outside the home directory is refused, and nothing of the instance is left.
#[test]
fn home_folders_are_made_before_the_command_starts() {
    let mut fixture = Fixture::new();
    let look = "stat -c '%u %a %F' /home/user/MyFiles /home/user/MyFiles/HomeFolder > /home/user/seen 2>&1; exec sleep 3600";
    let mut spec = fixture.spec(&["/bin/bash", "-c", look], Limits { vcpus: 1, memory_bytes: 256 << 20, pids: 128 });
    spec.home_folders = vec!["MyFiles/HomeFolder".into()];
    let instance = fixture.sandbox.create(&spec).expect("create the instance");
    let seen = (0..100)
        .find_map(|_| {
            let (code, seen) = fixture.sh(&instance, "cat /home/user/seen");
            std::thread::sleep(Duration::from_millis(50));
            (code == 0 && seen.lines().count() == 2).then_some(seen)
        })
        .expect("the command wrote what it saw");
    assert_eq!(seen, "1000 755 directory\n1000 755 directory\n");
    fixture.sandbox.destroy(instance).expect("destroy");

    for outside in ["../escape", "/etc/escape", "MyFiles/../../escape"] {
        let mut spec = fixture.spec(IDLE, Limits { vcpus: 1, memory_bytes: 256 << 20, pids: 128 });
        spec.home_folders = vec![outside.into()];
        let err = fixture.sandbox.create(&spec).map(|i| i.id.clone()).expect_err(outside);
        assert!(err.to_string().contains("is not a path inside the home directory"), "{outside}: {err}");
        assert!(!sandbox::network::leftover_links().contains(&spec.link.host_interface), "{outside}: its link is left");
    }
}

/// What an instance talks to (its endpoint) listens before the instance's command runs: a
/// command whose very first act is to call it is answered, every time, even when the endpoint
/// is slow to come up (here, a third of a second).
#[test]
fn the_endpoint_listens_before_the_instance_runs() {
    let mut fixture = Fixture::new();
    for _ in 0..3 {
        let mut spec = fixture.spec(&[], Limits { vcpus: 1, memory_bytes: 256 << 20, pids: 128 });
        let host = spec.link.host_address;
        spec.command = vec!["/bin/bash".into(), "-c".into(), format!("echo first > /dev/tcp/{host}/{ENDPOINT_PORT}; sleep infinity")];
        let (instance, endpoint) = fixture
            .sandbox
            .create_with(&spec, fixture.sandbox.lease_ids().expect("host ids"), |link| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(TcpListener::bind((link.host_address, ENDPOINT_PORT))?)
            })
            .expect("create the instance");
        endpoint.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heard = String::new();
        while heard.is_empty() && Instant::now() < deadline {
            match endpoint.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    std::io::Read::read_to_string(&mut stream, &mut heard).expect("read");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        assert_eq!(heard, "first\n", "the instance's first call found its endpoint closed");
        fixture.sandbox.destroy(instance).expect("destroy");
    }
}

/// An instance holds on to none of the host's mounts: a disk mounted on the host before the
/// instance started (another notebook's volume, say) is let go of as soon as the host unmounts
/// it, not when the instance ends. A helper that kept a way into the host's old mount tree kept
/// every mount of that moment alive in it, and a stopped notebook's disk stayed busy for as long
/// as any instance started before its stop ran.
#[test]
fn an_instance_keeps_no_host_mount_alive() {
    let mut fixture = Fixture::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (image, disk) = (dir.path().join("disk.img"), dir.path().join("disk"));
    std::fs::File::create(&image).and_then(|f| f.set_len(16 << 20)).expect("disk image");
    std::fs::create_dir(&disk).expect("mount point");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().expect("run");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["mkfs.ext4", "-q", "-F", image.to_str().expect("utf-8")]);
    run(&["mount", "-o", "loop", image.to_str().expect("utf-8"), disk.to_str().expect("utf-8")]);
    let instance = fixture.start(IDLE);
    run(&["umount", disk.to_str().expect("utf-8")]);
    let attached = || {
        let out = std::process::Command::new("losetup").arg("-j").arg(&image).output().expect("losetup");
        !out.stdout.is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while attached() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = attached();
    fixture.sandbox.destroy(instance).expect("destroy");
    assert!(!held, "the instance kept the host's disk mounted after the host unmounted it");
}
