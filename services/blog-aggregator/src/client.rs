//! Where a request comes from: the client's address, for limits per client.
//!
//! The address is the connection's peer, or, behind a proxy the operator trusts, the last
//! entry of the header it names (`OBA_CLIENT_ADDRESS_HEADER`, e.g. `X-Forwarded-For`): the
//! entry that proxy appended, which a client cannot forge.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderName};
use oba_kit::ServiceError;
use oba_kit::limit::KeyedLimit;

/// Every client's sign-in attempts, shared by all requests of this edge.
#[derive(Clone)]
pub struct Clients {
    address_header: Option<HeaderName>,
    sign_ins: Arc<KeyedLimit<IpAddr>>,
}

impl Clients {
    pub fn new(address_header: Option<HeaderName>, sign_ins_per_minute: NonZeroU32) -> Self {
        Self {
            address_header,
            sign_ins: Arc::new(KeyedLimit::per_minute(
                sign_ins_per_minute,
                "sign-in attempts from this address",
            )),
        }
    }

    /// The client of one request.
    pub fn client(&self, headers: &HeaderMap, extensions: &Extensions) -> Client {
        let forwarded = self.address_header.as_ref().and_then(|name| {
            let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Client {
            address: forwarded.or(peer),
            sign_ins: self.sign_ins.clone(),
        }
    }
}

/// The client of one request.
#[derive(Clone)]
pub struct Client {
    pub address: Option<IpAddr>,
    sign_ins: Arc<KeyedLimit<IpAddr>>,
}

impl Client {
    /// Counts a sign-in attempt (login or register) of this client.
    pub fn check_sign_in(&self) -> Result<(), ServiceError> {
        match self.address {
            Some(address) => self.sign_ins.check(&address),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(header: Option<&str>, forwarded: Option<&str>) -> Option<IpAddr> {
        let clients = Clients::new(
            header.map(|h| HeaderName::from_bytes(h.as_bytes()).expect("name")),
            NonZeroU32::MIN,
        );
        let mut headers = HeaderMap::new();
        if let Some(value) = forwarded {
            headers.insert("x-forwarded-for", value.parse().expect("value"));
        }
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))));
        clients.client(&headers, &extensions).address
    }

    #[test]
    fn the_address_is_the_peer_unless_a_trusted_proxy_names_it() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(client(None, Some("1.2.3.4")), Some(peer));
        assert_eq!(
            client(Some("x-forwarded-for"), Some("6.6.6.6, 1.2.3.4")),
            Some([1, 2, 3, 4].into())
        );
        assert_eq!(client(Some("x-forwarded-for"), None), Some(peer));
    }
}
