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

mod nft;

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

/// Creates the veth pair with its peer already in the instance's network namespace (`pid`'s)
/// as `eth0`, and addresses and starts both ends and the instance's loopback. The instance
/// gets no default route. All of it through rtnetlink, in one thread of its own: no process
/// is started for it. With a `service` address and group, loopback gets the address and the
/// instance its own firewall (see [`guard_service_address`]).
pub fn attach(link: &Link, pid: i32, service: Option<(Ipv4Addr, u32)>) -> Result<(), SandboxError> {
    let link = link.clone();
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| setup("find the instance's network", e))?;
    on_own_thread(move |runtime| {
        runtime.block_on(attach_host_side(&link, pid))?;
        // Reverse-path filtering: a packet whose source is not this link's instance is dropped.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/rp_filter", link.host_interface), "1");
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", link.host_interface), "1");
        // This thread now joins the instance's network namespace (it ends with this call): a
        // netlink socket opened from here on speaks to that namespace.
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| setup("enter the instance's network", e))?;
        runtime.block_on(attach_inside(&link, service.map(|(address, _)| address)))?;
        service.map_or(Ok(()), guard_service_address)
    })
}

/// The instance's own nftables table: a connection to the service `address` (a Jupyter
/// kernel's ports) from any socket but the service `group`'s is refused. A TCP connection is judged by its
/// first packet (a SYN alone): the listener's answers, which the kernel's sockets send, pass.
/// Nothing but TCP reaches the address from outside the service group. The table lives in the
/// instance's network namespace (the calling thread's, which `nft` inherits) and goes with it;
/// nothing inside can change it: the user's code has no capability over that namespace.
fn guard_service_address((address, group): (Ipv4Addr, u32)) -> Result<(), SandboxError> {
    nft(
        "guard the service address",
        &format!(
            "table ip datasandbox_instance {{
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {address} tcp flags & (syn | ack) == syn meta skgid != {group} counter reject with tcp reset
    ip daddr {address} meta l4proto != tcp meta skgid != {group} counter reject
  }}
}}
"
        ),
    )
}

/// Runs `work` on a thread of its own with a single-threaded runtime for rtnetlink: the
/// caller may be inside another runtime, and a thread that joins an instance's namespace must
/// not be one anybody else uses afterwards.
fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce(&tokio::runtime::Runtime) -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    let thread = std::thread::Builder::new().name("netlink".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| setup("start netlink", e))?;
        work(&runtime)
    });
    thread.map_err(|e| setup("start netlink", e))?.join().map_err(|_| setup("use netlink", "the netlink thread panicked"))?
}

fn netlink(step: &'static str) -> impl Fn(rtnetlink::Error) -> SandboxError {
    move |e| setup(step, e)
}

/// A connection in the calling thread's network namespace, served on `runtime`'s thread.
fn connect() -> Result<rtnetlink::Handle, SandboxError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| setup("open netlink", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of the interface `name`, if it exists.
async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    use futures::TryStreamExt as _;
    match handle.link().get().match_name(name).execute().try_next().await {
        Ok(found) => Ok(found.map(|link| link.header.index)),
        // The kernel answers a name it does not know with ENODEV.
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(None),
        Err(err) => Err(err),
    }
}

async fn attach_host_side(link: &Link, pid: i32) -> Result<(), SandboxError> {
    use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};
    let handle = connect()?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new().name("eth0").setns_by_pid(pid as u32).build();
    let veth = LinkVeth::new(&link.host_interface, &link.peer_interface())
        .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(rtnetlink::packet_route::link::InfoVeth::Peer(peer)))
        .build();
    handle.link().add(veth).execute().await.map_err(netlink("create the link"))?;
    let index = index_of(&handle, &link.host_interface).await.map_err(netlink("find the link"))?;
    let index = index.ok_or_else(|| setup("find the link", format!("{} is missing after its creation", link.host_interface)))?;
    handle.address().add(index, link.host_address.into(), 30).execute().await.map_err(netlink("address the link"))?;
    handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(netlink("start the link"))
}

/// Addresses and starts `eth0` and loopback; with a `service` address, loopback also gets it
/// as an address of its own (Jupyter launches kernels only on an address an interface has).
async fn attach_inside(link: &Link, service: Option<Ipv4Addr>) -> Result<(), SandboxError> {
    use rtnetlink::LinkUnspec;
    let handle = connect()?;
    let (eth0, lo) = (index_of(&handle, "eth0").await, index_of(&handle, "lo").await);
    let (Some(eth0), Some(lo)) = (eth0.map_err(netlink("find eth0"))?, lo.map_err(netlink("find loopback"))?) else {
        return Err(setup("address the instance", "the instance has no eth0 or no loopback"));
    };
    handle.address().add(eth0, link.instance_address.into(), 30).execute().await.map_err(netlink("address the instance"))?;
    handle.link().set(LinkUnspec::new_with_index(eth0).up().build()).execute().await.map_err(netlink("start the instance link"))?;
    if let Some(address) = service {
        handle.address().add(lo, address.into(), 32).execute().await.map_err(netlink("address the service"))?;
    }
    handle.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(netlink("start loopback"))
}

/// Removes the veth pair (deleting one end deletes both); a missing link is not an error (the
/// kernel removes the pair itself when the instance's namespace goes away).
pub fn detach(link: &Link) -> Result<(), SandboxError> {
    let name = link.host_interface.clone();
    on_own_thread(move |runtime| {
        runtime.block_on(async {
            let handle = connect()?;
            let Some(index) = index_of(&handle, &name).await.map_err(netlink("remove the link"))? else { return Ok(()) };
            match handle.link().del(index).execute().await {
                Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(()),
                other => other.map_err(netlink("remove the link")),
            }
        })
    })
}

/// Every instance link left on the host.
pub fn leftover_links() -> Vec<String> {
    let listed = on_own_thread(|runtime| {
        runtime.block_on(async {
            use futures::TryStreamExt as _;
            let handle = connect()?;
            let links: Vec<_> = handle.link().get().execute().try_collect().await.map_err(netlink("list the links"))?;
            Ok(links
                .into_iter()
                .filter_map(|link| {
                    link.attributes.into_iter().find_map(|a| match a {
                        rtnetlink::packet_route::link::LinkAttribute::IfName(name) => Some(name),
                        _ => None,
                    })
                })
                .filter(|name| name.starts_with("ds-"))
                .collect::<Vec<String>>())
        })
    });
    listed.unwrap_or_default()
}

/// The host's nftables table for instance links.
pub struct Firewall {
    endpoint_port: u16,
    /// The long-lived `nft` that per-instance elements go through; started again after it broke.
    session: std::sync::Mutex<Option<nft::Session>>,
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
        Ok(Firewall { endpoint_port, session: std::sync::Mutex::new(nft::Session::start(TABLE).ok()) })
    }

    pub fn endpoint_port(&self) -> u16 {
        self.endpoint_port
    }

    /// Lets this link's instance address reach the endpoint on this link's host address.
    pub fn allow(&self, link: &Link) -> Result<(), SandboxError> {
        self.change("allow the link", &format!("add element inet {TABLE} links {}", element(link)))
    }

    /// Removes the link's element; a missing element or table is not an error.
    pub fn revoke(&self, link: &Link) -> Result<(), SandboxError> {
        let command = format!("delete element inet {TABLE} links {}", element(link));
        tolerate_missing(self.change("revoke the link", &command))
    }

    /// One change through the long-lived session; through a one-shot `nft` when the session
    /// cannot be had or broke (it is started again next time).
    fn change(&self, step: &'static str, command: &str) -> Result<(), SandboxError> {
        let mut session = self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if session.is_none() {
            *session = nft::Session::start(TABLE).ok();
        }
        if let Some(running) = session.as_mut() {
            match running.run(command) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(message)) => return Err(setup(step, format!("nft: {message}"))),
                Err(err) => {
                    tracing::warn!(error = %err, "the nft session broke; starting another");
                    *session = None;
                }
            }
        }
        nft(step, &format!("{command}\n"))
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

/// Removes a link's firewall element with a one-shot `nft` (after a crash, with no session);
/// a missing element or table is not an error.
pub fn revoke(link: &Link) -> Result<(), SandboxError> {
    let script = format!("delete element inet {TABLE} links {}\n", element(link));
    tolerate_missing(nft("revoke the link", &script))
}

/// A link's element of the `links` set: its instance address and its host address.
fn element(link: &Link) -> String {
    format!("{{ {} . {} }}", link.instance_address, link.host_address)
}

fn tolerate_missing(result: Result<(), SandboxError>) -> Result<(), SandboxError> {
    match result {
        Err(SandboxError::Setup { message, .. }) if message.contains("No such file") || message.contains("not exist") => Ok(()),
        other => other,
    }
}
