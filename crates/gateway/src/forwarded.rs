//! The client's address behind the operator's proxies (`server.trusted_proxies`).
//!
//! Behind a proxy that terminates TLS every connection comes from the proxy, so the trail
//! would record the proxy's address for everyone, and sign-in limits, counted per address,
//! would let one stranger's guesses stop everybody's sign-ins. A trusted proxy says whom it
//! forwards for in `X-Forwarded-For`, appending the address it heard from; so the list is read
//! from its right end, one hop at a time while the hop is itself a trusted proxy, and the
//! first address that is not one is the client. Anything to its left was written by the client
//! and is ignored. From any other peer the header is ignored whole: the peer is the client.
//!
//! The peer's address is replaced in the request's `ConnectInfo`, so every handler behind
//! this layer (records, limits, session addresses) sees the client's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone)]
pub(crate) struct Trusted(Arc<[ipnet::IpNet]>);

impl Trusted {
    pub(crate) fn new(proxies: &[ipnet::IpNet]) -> Trusted {
        Trusted(proxies.into())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client a request from `peer` is for.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        // Hop by hop, as bytes: a proxy appends its hop to whatever the client sent in one
        // value, and one byte of the client's that is not text must not hide the hops after it.
        let hops: Vec<&[u8]> = headers.get_all("x-forwarded-for").iter().flat_map(|value| value.as_bytes().split(|b| *b == b',')).collect();
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            // A hop that is not an address ends the walk: what is left of it is not vouched for.
            match std::str::from_utf8(hop).ok().and_then(|hop| address_of(hop.trim())) {
                Some(address) => client = address.to_canonical(),
                None => break,
            }
        }
        client
    }
}

/// A hop's address, written alone or with a port (`192.0.2.7:5678`, `[2001:db8::7]:443`).
fn address_of(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|at| at.ip()))
}

/// Replaces the peer's address with the client's when the peer is a trusted proxy.
pub(crate) async fn client_address(State(trusted): State<Trusted>, mut request: Request, next: Next) -> Response {
    if !trusted.0.is_empty()
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    {
        let client = trusted.client(peer.ip(), request.headers());
        if client != peer.ip() {
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, peer.port())));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: &[&str], peer: &str, forwarded: &[&str]) -> String {
        let trusted = Trusted::new(&trusted.iter().map(|t| t.parse().expect("a network")).collect::<Vec<_>>());
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().expect("a header value"));
        }
        trusted.client(peer.parse().expect("an address"), &headers).to_string()
    }

    #[test]
    fn the_client_is_the_first_hop_from_the_right_that_is_not_a_trusted_proxy() {
        let proxies = ["127.0.0.1/32", "192.168.7.0/24"];
        // Through one proxy, and through two: the client's address.
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9, 192.168.7.20"]), "203.0.113.9");
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9", "192.168.7.20"]), "203.0.113.9", "two headers are one list");
        // What the client wrote itself, left of what the proxy appended, is not believed.
        assert_eq!(client(&proxies, "127.0.0.1", &["127.0.0.1, 198.51.100.1, 203.0.113.9"]), "203.0.113.9");
        // From a peer that is not a proxy, the header is ignored.
        assert_eq!(client(&proxies, "198.51.100.7", &["203.0.113.9"]), "198.51.100.7");
        // A hop that is no address ends the walk at the last proxy that vouched.
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9, unknown"]), "127.0.0.1");
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9, 192.168.7.20, nonsense"]), "127.0.0.1");
        // The proxy's own requests (no header) are its own; IPv4 in IPv6 is IPv4.
        assert_eq!(client(&proxies, "127.0.0.1", &[]), "127.0.0.1");
        assert_eq!(client(&proxies, "::ffff:127.0.0.1", &["::ffff:203.0.113.9"]), "203.0.113.9");
        // Every hop a trusted proxy: the leftmost.
        assert_eq!(client(&proxies, "127.0.0.1", &["192.168.7.3, 192.168.7.20"]), "192.168.7.3");
        // Hops with ports; a byte of the client's that is not text hides nothing after it.
        assert_eq!(client(&proxies, "127.0.0.1", &["203.0.113.9:5678"]), "203.0.113.9");
        assert_eq!(client(&proxies, "127.0.0.1", &["[2001:db8::7]:443"]), "2001:db8::7");
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\xff, 203.0.113.9").expect("a header value"));
        let trusted = Trusted::new(&["127.0.0.1/32".parse().expect("a network")]);
        assert_eq!(trusted.client("127.0.0.1".parse().expect("an address"), &headers).to_string(), "203.0.113.9");
    }
}
