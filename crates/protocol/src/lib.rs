//! The wire between weft's control plane and its proxies: protobuf messages
//! and gRPC services, generated from `proto/` at build time. Domain code
//! converts to and from these types at the edge and nowhere else.

/// `istio.v1.auth`: the certificate service, as Istio defines it.
pub mod istio_ca {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("istio.v1.auth");
}

/// `envoy.service.auth.v3`: the external authorization service that
/// CUSTOM AuthorizationPolicies call over gRPC.
pub mod ext_authz {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("envoy.service.auth.v3");
}

/// `weft.mesh.v1`: the configuration stream from the control plane to its
/// proxies, and the status and config-dump queries.
pub mod mesh {
    #![allow(unreachable_pub, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("weft.mesh.v1");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::istio_ca::{IstioCertificateRequest, istio_certificate_service_server};

    /// Istio's agents call this exact path with these field numbers.
    #[test]
    fn certificate_service_matches_istios_wire_format() {
        assert_eq!(
            istio_certificate_service_server::SERVICE_NAME,
            "istio.v1.auth.IstioCertificateService"
        );
        let req = IstioCertificateRequest {
            csr: "x".into(),
            validity_duration: 3600,
            metadata: None,
        };
        // csr is field 1 (tag 0x0a), validity_duration field 3 (tag 0x18).
        assert_eq!(
            req.encode_to_vec(),
            vec![0x0a, 0x01, b'x', 0x18, 0x90, 0x1c]
        );
    }
}
