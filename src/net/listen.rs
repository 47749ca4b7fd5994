//! Making sure the listen address is ours before the workers bind it with `SO_REUSEPORT`.
//!
//! `SO_REUSEPORT` lets any process of the same user bind the same address, and the kernel then splits
//! new connections between them: a second influx-proxy started by mistake with the same `listenaddr`
//! (and another data dir) would silently take half the traffic. So before binding, [`claim_address`]
//! (1) binds an abstract Unix socket named after the address, which only one process can hold at a
//! time and which the kernel releases when the process dies however it dies: two proxies starting
//! together cannot both pass; (2) binds the address once WITHOUT `SO_REUSEPORT`, which fails with
//! EADDRINUSE if any socket, reuseport or not, of any process already holds it. The probe is closed
//! before the workers bind; the claim is held for the life of the process.
//! Invariant: while an [`AddressClaim`] lives, no other influx-proxy on this host (network namespace)
//! can claim the same address.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use socket2::{Domain, Protocol, Socket, Type};

/// Held for as long as the proxy serves the address.
#[derive(Debug)]
pub struct AddressClaim {
    _socket: Option<UnixDatagram>,
}

#[derive(Debug)]
pub enum ListenError {
    /// Another influx-proxy holds the claim on this address.
    OtherProxy(SocketAddr),
    /// Some process (maybe an influx-proxy of an older version) has a socket on this address.
    InUse(SocketAddr),
    Io(SocketAddr, io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::OtherProxy(a) => {
                write!(f, "cannot listen on {a}: address already in use by another influx-proxy")
            }
            ListenError::InUse(a) => write!(f, "cannot listen on {a}: address already in use by another process"),
            ListenError::Io(a, e) => write!(f, "cannot listen on {a}: {e}"),
        }
    }
}

impl std::error::Error for ListenError {}

/// Claims `addr` for this process (see the module comment); call before binding the workers' listeners.
pub fn claim_address(addr: SocketAddr) -> Result<AddressClaim, ListenError> {
    let name = format!("influx-proxy listen {addr}");
    let claim = match UnixAddr::from_abstract_name(name.as_bytes()).and_then(|unix| UnixDatagram::bind_addr(&unix)) {
        Ok(socket) => Some(socket),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(ListenError::OtherProxy(addr)),
        // E.g. Unix sockets forbidden by a sandbox: the probe below still catches any proxy already
        // serving; only two started at the same instant could both pass.
        Err(e) => {
            log::warn!("cannot claim {addr} with an abstract Unix socket ({e}); relying on a bind probe alone");
            None
        }
    };
    probe(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse(addr),
        _ => ListenError::Io(addr, e),
    })?;
    Ok(AddressClaim { _socket: claim })
}

/// Binds `addr` without `SO_REUSEPORT` and closes it again. `SO_REUSEADDR` is set, as on the real
/// listeners, so connections of a previous run still in TIME_WAIT do not count as "in use".
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[test]
    fn second_claim_of_an_address_fails_until_the_first_is_dropped() {
        let addr = free_addr();
        let claim = claim_address(addr).unwrap();
        let _listeners =
            [super::super::reuseport_listener(addr).unwrap(), super::super::reuseport_listener(addr).unwrap()];
        assert!(matches!(claim_address(addr), Err(ListenError::OtherProxy(_))));
        drop(claim);
        // Released, but the port is still held by the listeners.
        assert!(matches!(claim_address(addr), Err(ListenError::InUse(_))));
    }

    #[test]
    fn an_address_held_by_anyone_is_in_use() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        assert!(matches!(claim_address(addr), Err(ListenError::InUse(_))));
        // Another process's SO_REUSEPORT socket would let ours join its group: still in use.
        let shared = super::super::reuseport_listener(free_addr()).unwrap();
        let addr = shared.local_addr().unwrap();
        let e = claim_address(addr).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, format!("cannot listen on {addr}: address already in use by another process"));
    }
}
