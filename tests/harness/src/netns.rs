//! [`PrivateNet`]: a network namespace a test creates, holding one bridge, for host boxes
//! that must reach each other and nothing else (a k3s server and its agents on a private
//! subnet, as in a VPC).
//!
//! How it works:
//! - `create()` runs `ip netns add bosun-<hex>`, then inside it brings `lo` up and adds the
//!   bridge `br0` with the gateway address `10.77.0.1/24`. Every namespace is its own world,
//!   so the fixed subnet never collides with another test's.
//! - A box booted with [`crate::BoxSpec::network`] runs `systemd-nspawn` inside the namespace
//!   (`nsenter --net`) with `--network-bridge=br0`: nspawn makes a veth pair, one end (`host0`)
//!   in the box, the other on the bridge. The harness gives `host0` its address and a default
//!   route through the gateway once the box has booted.
//! - Nothing on the host's network reaches the boxes, and they reach nothing of the host's
//!   (no package mirror, no loopback peers) except what [`PrivateNet::forward`] relays: a TCP
//!   port on the gateway address relayed to a host address (a moto server on the host's
//!   loopback). The relay's listening socket is made inside the namespace by a thread that
//!   enters it (`setns(2)` changes only the calling thread) and leaves it again before it
//!   connects out, so its outgoing connections start in the host's namespace.
//! - Dropping the net stops its relays and deletes the namespace (the bridge and the host
//!   ends of the veths go with it; drop the boxes first).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{is_root, random_hex};

/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// The first three octets of the subnet (a /24).
const SUBNET: &str = "10.77.0";

/// A network namespace with a bridge. See the module documentation.
#[derive(Debug)]
pub struct PrivateNet {
    name: String,
    stops: Vec<Arc<AtomicBool>>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("cannot run ip {args:?} (install iproute2)"))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl PrivateNet {
    /// Creates the namespace and its bridge (root only).
    pub fn create() -> Result<PrivateNet> {
        if !is_root() {
            bail!("a private network namespace needs root (run the tests as root, e.g. in CI)");
        }
        let name = format!("bosun-{}", random_hex(4)?);
        ip(&["netns", "add", &name])?;
        let net = PrivateNet {
            name,
            stops: Vec::new(),
        };
        let gw = format!("{}/24", net.gateway());
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["addr", "add", &gw, "dev", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            let mut full = vec!["-n", net.name.as_str()];
            full.extend(args);
            ip(&full)?;
        }
        Ok(net)
    }

    /// The namespace's name (`ip netns exec <name> ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's own address, the boxes' default route: `10.77.0.1`.
    pub fn gateway(&self) -> String {
        format!("{SUBNET}.1")
    }

    /// Address `n` of the subnet (`10.77.0.<n>`; 2..=254 are free for boxes).
    pub fn address(&self, n: u8) -> String {
        format!("{SUBNET}.{n}")
    }

    /// Relays TCP connections to `<gateway>:<port>` inside the namespace to `target` (an
    /// address of the host's network, e.g. a peer on 127.0.0.1), until the net is dropped.
    pub fn forward(&mut self, port: u16, target: SocketAddr) -> Result<()> {
        let bind: SocketAddr = format!("{}:{port}", self.gateway()).parse()?;
        let netns = format!("/run/netns/{}", self.name);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        thread::spawn(move || {
            let listener = match bind_in(&netns, bind) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            relay(listener, target, &stopped);
        });
        rx.recv()
            .context("the relay thread ended before listening")??;
        self.stops.push(stop);
        Ok(())
    }
}

/// Binds `addr` inside the namespace at `netns`, then returns this thread to the namespace it
/// came from.
fn bind_in(netns: &str, addr: SocketAddr) -> Result<TcpListener> {
    use nix::sched::{CloneFlags, setns};
    let home = std::fs::File::open("/proc/thread-self/ns/net")
        .context("opening this thread's network namespace")?;
    let target = std::fs::File::open(netns).with_context(|| format!("opening {netns}"))?;
    setns(&target, CloneFlags::CLONE_NEWNET).context("entering the private namespace")?;
    let listener = TcpListener::bind(addr);
    setns(&home, CloneFlags::CLONE_NEWNET).context("returning to the host namespace")?;
    let listener = listener.with_context(|| format!("binding {addr} in {netns}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn relay(listener: TcpListener, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((inbound, _)) => {
                let _ = inbound.set_nonblocking(false);
                thread::spawn(move || {
                    if let Ok(outbound) = TcpStream::connect(target) {
                        pipe(inbound, outbound);
                    }
                });
            }
            // Nothing to accept: look at the stop flag again shortly (the listener cannot be
            // woken from the host's namespace).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || {
        let (mut from, mut to) = (a, b2);
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (b, a2);
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.store(true, Ordering::Relaxed);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
