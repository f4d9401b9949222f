//! Transparent capture: connections that iptables redirected to the
//! proxy's listeners (the rules istio-init writes: outbound TCP to 15001,
//! inbound to 15006, the proxy's own user exempt), and the destination
//! each was meant for, from the kernel's connection tracking
//! (SO_ORIGINAL_DST).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Where `tcp` was going before it was redirected here; `None` when it
/// was not redirected (it came to this listener's own address).
pub fn original_destination(tcp: &TcpStream) -> Option<SocketAddr> {
    let local = tcp.local_addr().ok()?;
    let original = match local {
        SocketAddr::V4(_) => {
            let a = getsockopt(tcp, sockopt::OriginalDst).ok()?;
            SocketAddr::from((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        SocketAddr::V6(_) => {
            let a = getsockopt(tcp, sockopt::Ip6tOriginalDst).ok()?;
            SocketAddr::from((
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            ))
        }
    };
    (original != local).then_some(original)
}
