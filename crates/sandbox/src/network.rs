//! The instance's only way out: one veth pair, a /30 carved from `vpc_cidr`, and a
//! DataSandbox-owned nftables table that lets an instance reach the endpoint port on its own
//! link's host address and nothing else — no forwarding, no other host port, no other link.
//! A link whose host address the host already has (another control plane with an overlapping
//! `vpc_cidr`) is refused before anything is made.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, setup};

pub const TABLE: &str = "datasandbox";

/// One instance's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Host-side interface name, `ds-<11 chars>`: interface names have at most 15 bytes, and
    /// the peer's temporary name adds a `p`.
    pub host_interface: String,
    pub host_address: Ipv4Addr,
    pub instance_address: Ipv4Addr,
}

impl Link {
    pub fn new(id: &str, host_address: Ipv4Addr, instance_address: Ipv4Addr) -> Link {
        let short: String = id.chars().filter(char::is_ascii_alphanumeric).take(11).collect();
        Link { host_interface: format!("ds-{short}"), host_address, instance_address }
    }

    fn peer_interface(&self) -> String {
        format!("{}p", self.host_interface)
    }
}

fn run(step: &'static str, command: &mut Command) -> Result<(), SandboxError> {
    let output = command.stderr(Stdio::piped()).output().map_err(|e| setup(step, e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(setup(step, format!("{:?} failed: {}", command, String::from_utf8_lossy(&output.stderr).trim())))
    }
}

fn nft(step: &'static str, script: &str) -> Result<(), SandboxError> {
    let mut child =
        Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| setup(step, e))?;
    child.stdin.take().expect("piped").write_all(script.as_bytes()).map_err(|e| setup(step, e))?;
    let output = child.wait_with_output().map_err(|e| setup(step, e))?;
    if output.status.success() { Ok(()) } else { Err(setup(step, format!("nft: {}", String::from_utf8_lossy(&output.stderr).trim()))) }
}

/// Refuses a link whose host address the host already has: another control plane here, with
/// an overlapping `vpc_cidr`, would then share it, and the endpoint of one would answer the
/// other's instance. Binding to an address succeeds only if it is already local.
pub fn ensure_unused(link: &Link) -> Result<(), SandboxError> {
    if std::net::UdpSocket::bind((link.host_address, 0)).is_ok() {
        return Err(setup(
            "address the link",
            format!(
                "the host already has the address {} (is another DataSandbox on this host using an overlapping vpc_cidr?); give each control plane a vpc_cidr of its own",
                link.host_address
            ),
        ));
    }
    Ok(())
}

/// Creates the veth pair, moves its peer into the instance's network namespace (`pid`'s) as
/// `eth0`, and addresses both ends. The instance gets no default route.
pub fn attach(link: &Link, pid: i32) -> Result<(), SandboxError> {
    let peer = link.peer_interface();
    run("create the link", Command::new("ip").args(["link", "add", &link.host_interface, "type", "veth", "peer", "name", &peer]))?;
    // Reverse-path filtering: a packet whose source is not this link's instance is dropped.
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/rp_filter", link.host_interface), "1");
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", link.host_interface), "1");
    run("address the link", Command::new("ip").args(["addr", "add", &format!("{}/30", link.host_address), "dev", &link.host_interface]))?;
    run("start the link", Command::new("ip").args(["link", "set", &link.host_interface, "up"]))?;
    run("move the link into the instance", Command::new("ip").args(["link", "set", &peer, "netns", &pid.to_string(), "name", "eth0"]))?;
    let inside = |args: &[&str]| {
        let mut command = Command::new("nsenter");
        command.args(["-t", &pid.to_string(), "-n", "ip"]).args(args);
        command
    };
    run("address the instance", &mut inside(&["addr", "add", &format!("{}/30", link.instance_address), "dev", "eth0"]))?;
    run("start the instance link", &mut inside(&["link", "set", "eth0", "up"]))?;
    run("start loopback", &mut inside(&["link", "set", "lo", "up"]))?;
    Ok(())
}

/// Removes the veth pair (deleting one end deletes both); a missing link is not an error.
pub fn detach(link: &Link) -> Result<(), SandboxError> {
    let output = Command::new("ip")
        .args(["link", "del", &link.host_interface])
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| setup("remove the link", e))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The kernel removes the pair itself when the instance's namespace goes away.
    if output.status.success() || stderr.contains("Cannot find device") || stderr.contains("No such device") {
        Ok(())
    } else {
        Err(setup("remove the link", stderr.trim().to_owned()))
    }
}

/// Every instance link left on the host.
pub fn leftover_links() -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    output
        .lines()
        .filter_map(|line| line.split(": ").nth(1).map(|name| name.split('@').next().unwrap_or(name).to_owned()))
        .filter(|name| name.starts_with("ds-"))
        .collect()
}

/// The host's nftables table for instance links.
pub struct Firewall {
    endpoint_port: u16,
}

impl Firewall {
    /// Creates the table if the host does not have it yet: traffic from instance links is
    /// dropped unless a per-link element accepts it; nothing is forwarded to or from them; the
    /// host opens no connection to them. An existing table is kept (other control planes or
    /// instances may be using it); the endpoint port is added to its set.
    pub fn install(endpoint_port: u16) -> Result<Firewall, SandboxError> {
        let exists = Command::new("nft")
            .args(["list", "table", "inet", TABLE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            nft(
                "install the firewall table",
                &format!(
                    "table inet {TABLE} {{
  set links {{ type ipv4_addr . ipv4_addr; }}
  set endpoint_ports {{ type inet_service; }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname \"ds-*\" ip saddr . ip daddr @links tcp dport @endpoint_ports ct state new,established accept
    iifname \"ds-*\" counter drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname \"ds-*\" counter drop
    oifname \"ds-*\" counter drop
  }}
  chain output {{
    type filter hook output priority -10; policy accept;
    oifname \"ds-*\" ct state established accept
    oifname \"ds-*\" counter drop
  }}
}}
"
                ),
            )?;
        }
        nft("open the endpoint port", &format!("add element inet {TABLE} endpoint_ports {{ {endpoint_port} }}\n"))?;
        Ok(Firewall { endpoint_port })
    }

    pub fn endpoint_port(&self) -> u16 {
        self.endpoint_port
    }

    /// Lets this link's instance address reach the endpoint on this link's host address.
    pub fn allow(&self, link: &Link) -> Result<(), SandboxError> {
        nft("allow the link", &format!("add element inet {TABLE} links {{ {} . {} }}\n", link.instance_address, link.host_address))
    }

    pub fn revoke(&self, link: &Link) -> Result<(), SandboxError> {
        revoke(link)
    }

    /// The packets the forward chain has dropped (anything an instance tried to route).
    pub fn forwarded_drops() -> u64 {
        let output = Command::new("nft")
            .args(["list", "chain", "inet", TABLE, "forward"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        output.split("packets ").skip(1).filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok()).sum()
    }

    /// The allowed (instance, host) address pairs currently in the table.
    pub fn elements() -> String {
        Command::new("nft")
            .args(["list", "set", "inet", TABLE, "links"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Removes a link's firewall element; a missing element or table is not an error.
pub fn revoke(link: &Link) -> Result<(), SandboxError> {
    let script = format!("delete element inet {TABLE} links {{ {} . {} }}\n", link.instance_address, link.host_address);
    match nft("revoke the link", &script) {
        Err(SandboxError::Setup { message, .. }) if message.contains("No such file") || message.contains("not exist") => Ok(()),
        other => other,
    }
}
