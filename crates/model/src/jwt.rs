//! RequestAuthentication compiled for one workload: the JWT issuers it
//! trusts, where their keys are, and where tokens are looked for. The
//! proxy validates tokens against these rules; the same scope rules as
//! AuthorizationPolicy pick the resources (the workload's namespace with a
//! matching selector or none, and the root namespace).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_api::{Resource, Spec};

use crate::registry::policy_applies;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRule {
    /// `namespace/name` of the RequestAuthentication.
    pub source: String,
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Inline JWKS (JSON), or where to fetch it.
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
    /// Header name and value prefix; when no location is given, Istio's
    /// defaults: `Authorization: Bearer <token>` and `?access_token=`.
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    /// Claim to header.
    pub output_claim_to_headers: Vec<(String, String)>,
}

/// The JWT rules that apply to a workload in `namespace` with `labels`.
pub fn for_workload(
    resources: &[Resource],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<JwtRule> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::RequestAuthentication(ra) = &r.spec else {
            continue;
        };
        let targets: Vec<_> = ra.target_ref.iter().chain(&ra.target_refs).collect();
        let selector = ra.selector.as_ref().map(|s| &s.match_labels);
        if !policy_applies(
            r.namespace(),
            root_namespace,
            selector,
            &targets,
            namespace,
            labels,
        ) {
            continue;
        }
        for j in &ra.jwt_rules {
            let mut from_headers: Vec<(String, String)> = j
                .from_headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        h.prefix.clone().unwrap_or_default(),
                    )
                })
                .collect();
            let mut from_params = j.from_params.clone();
            if from_headers.is_empty() && from_params.is_empty() && j.from_cookies.is_empty() {
                from_headers.push(("authorization".into(), "Bearer ".into()));
                from_params.push("access_token".into());
            }
            out.push(JwtRule {
                source: format!("{}/{}", r.namespace(), r.name),
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                jwks: j.jwks.clone(),
                jwks_uri: j.jwks_uri.clone(),
                from_headers,
                from_params,
                from_cookies: j.from_cookies.clone(),
                forward_original_token: j.forward_original_token == Some(true),
                output_payload_to_header: j.output_payload_to_header.clone(),
                output_claim_to_headers: j
                    .output_claim_to_headers
                    .iter()
                    .map(|c| (c.claim.clone(), c.header.to_ascii_lowercase()))
                    .collect(),
            });
        }
    }
    out
}
