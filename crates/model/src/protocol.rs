//! Which protocol a port speaks, as Istio decides it: the declared
//! `protocol` (or `appProtocol`), else the port name's prefix (`http-`,
//! `grpc-`, `tcp-`, ...), else TCP.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" => Protocol::Http,
            "http2" | "grpc-web" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "mongo" | "redis" | "mysql" => Protocol::Tcp,
            _ => return None,
        })
    }

    /// From the declared protocol, else the port name's prefix.
    pub fn of_port(declared: Option<&str>, name: &str) -> Protocol {
        if let Some(p) = declared.and_then(Protocol::parse) {
            return p;
        }
        let prefix = name.split('-').next().unwrap_or(name);
        Protocol::parse(prefix).unwrap_or(Protocol::Tcp)
    }

    /// Whether the proxy parses HTTP on this port.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_protocol_then_name_prefix_then_tcp() {
        assert_eq!(Protocol::of_port(Some("HTTP"), "anything"), Protocol::Http);
        assert_eq!(Protocol::of_port(None, "http-web"), Protocol::Http);
        assert_eq!(Protocol::of_port(None, "grpc"), Protocol::Grpc);
        assert_eq!(Protocol::of_port(None, "http2-api"), Protocol::Http2);
        assert_eq!(Protocol::of_port(None, "tcp-db"), Protocol::Tcp);
        assert_eq!(Protocol::of_port(None, "metrics"), Protocol::Tcp);
        assert_eq!(Protocol::of_port(Some("bogus"), "http"), Protocol::Http);
    }
}
