//! Gateway rules (server TLS settings, also used by Sidecar).

use super::*;

pub(crate) fn gateway(cx: &mut Cx, r: &Resource, gw: &Gateway) {
    let root = Path::Root;
    let spec = root.field("spec");
    if !is_dns1123_label(&r.name) {
        cx.err(
            &root.field("metadata").field("name"),
            format!("invalid gateway name: {:?}", r.name),
        );
    }
    if gw.servers.is_empty() {
        cx.err(
            &spec.field("servers"),
            "gateway must have at least one server",
        );
    }
    let servers = spec.field("servers");
    let mut port_names = HashSet::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let at = servers.index(i);
        if s.hosts.is_empty() {
            cx.err(
                &at.field("hosts"),
                "server config must contain at least one host",
            );
        }
        let hosts = at.field("hosts");
        for (j, h) in s.hosts.iter().enumerate() {
            cx.check(&hosts.index(j), namespace_slash_host(h, true));
        }
        let bind = s.bind.as_deref().unwrap_or("");
        let unix = bind.starts_with("unix://");
        let mut proto = None;
        match &s.port {
            None => cx.err(&at.field("port"), "port is required"),
            Some(port) => {
                let pat = at.field("port");
                let p = port.protocol.as_deref().unwrap_or("");
                proto = Protocol::parse(p);
                if proto.is_none() {
                    cx.err(
                        &pat.field("protocol"),
                        format!("invalid protocol {p:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"),
                    );
                }
                let number = port.number.unwrap_or(0);
                if number > 0 || !unix {
                    cx.check(&pat.field("number"), port_number(number));
                }
                if port.target_port.is_some_and(|t| t > 0) {
                    cx.err(
                        &pat.field("targetPort"),
                        "targetPort has no impact on Gateways",
                    );
                }
                let name = port.name.as_deref().unwrap_or("");
                if name.is_empty() {
                    cx.err(&pat.field("name"), "port name must be set");
                } else if !port_names.insert(name) {
                    cx.err(
                        &pat.field("name"),
                        format!("port names in servers must be unique: duplicate name {name}"),
                    );
                }
                if unix && number != 0 {
                    cx.err(
                        &pat.field("number"),
                        "port number must be 0 for unix domain socket",
                    );
                }
            }
        }
        if unix {
            cx.check(&at.field("bind"), unix_address(&bind["unix://".len()..]));
        } else if !bind.is_empty() && bind.parse::<std::net::IpAddr>().is_err() {
            cx.err(&at.field("bind"), format!("{bind} is not a valid IP"));
        }
        server_tls(cx, &at.field("tls"), s.tls.as_ref());
        if let Some(p) = proto {
            match &s.tls {
                None if p.is_tls() => {
                    cx.err(&at, "server must have TLS settings for HTTPS/TLS protocols")
                }
                Some(tls) if !p.is_tls() => {
                    let certs = [
                        &tls.ca_certificates,
                        &tls.private_key,
                        &tls.server_certificate,
                    ]
                    .iter()
                    .any(|c| c.as_deref().is_some_and(|c| !c.is_empty()));
                    if p.is_http() {
                        let passthrough_only =
                            matches!(tls.mode, None | Some(ServerTlsMode::Passthrough));
                        if !passthrough_only || certs {
                            cx.err(
                                &at.field("tls"),
                                "server cannot have TLS settings for plain text HTTP ports",
                            );
                        }
                    } else {
                        cx.err(
                            &at.field("tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    }
                    if !p.is_http() && tls.https_redirect == Some(true) {
                        cx.warn(
                            &at.field("tls").field("httpsRedirect"),
                            "tls.httpsRedirect should only be used with http servers",
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

pub(crate) fn server_tls(cx: &mut Cx, at: &Path<'_>, tls: Option<&ServerTlsSettings>) {
    let Some(t) = tls else { return };
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if matches!(
        t.min_protocol_version,
        Some(TlsProtocol::V1_0 | TlsProtocol::V1_1)
    ) && t.cipher_suites.is_empty()
    {
        cx.warn(
            &at.field("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mode = t.mode.unwrap_or(ServerTlsMode::Passthrough);
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, what) in [
                (&t.server_certificate, "server certificate"),
                (&t.private_key, "private key"),
                (&t.ca_certificates, "CA bundle"),
                (&t.credential_name, "credentialName"),
            ] {
                if set(field) {
                    cx.err(
                        at,
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            return;
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if set(&t.ca_crl)
                || set(&t.server_certificate)
                || set(&t.private_key)
                || set(&t.ca_certificates)
                || set(&t.credential_name)
            {
                let name = if mode == ServerTlsMode::Passthrough {
                    "PASSTHROUGH"
                } else {
                    "AUTO_PASSTHROUGH"
                };
                cx.warn(
                    at,
                    format!("{name} mode does not use certificates, they will be ignored"),
                );
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let remote = set(&t.credential_name)
                || !t.credential_names.is_empty()
                || !t.tls_certificates.is_empty();
            if !remote {
                let label = if mode == ServerTlsMode::Simple {
                    "SIMPLE"
                } else {
                    "MUTUAL"
                };
                if !set(&t.server_certificate) {
                    cx.err(at, format!("{label} TLS requires a server certificate"));
                }
                if !set(&t.private_key) {
                    cx.err(at, format!("{label} TLS requires a private key"));
                }
                if mode != ServerTlsMode::Simple && !set(&t.ca_certificates) {
                    cx.err(at, "MUTUAL TLS requires a client CA bundle");
                }
            }
        }
    }
    if set(&t.ca_crl) {
        if set(&t.credential_name) {
            cx.err(at, "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        if mode == ServerTlsMode::Simple {
            cx.err(at, "CRL is not supported with SIMPLE TLS");
        }
    }
    if set(&t.credential_name) && !t.credential_names.is_empty() {
        cx.err(
            at,
            "only one of credentialName or credentialNames can be set",
        );
    }
}
