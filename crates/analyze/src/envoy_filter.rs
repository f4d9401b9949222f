//! EnvoyFilter patches that Istio's analyzer warns of (IST0151 to
//! IST0155): operations that do nothing where they are applied, and
//! relative operations without a priority, whose outcome depends on the
//! order filters happen to be applied in.

use weft_api::types::envoy_filter::{ApplyTo, PatchOperation};
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

const RELATIVE: &str = "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.";
const RELATIVE_WITH_VERSION: &str = "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.";

/// Every EnvoyFilter in `resources`, in order: a patch whose target was
/// named before by a patch matching a proxy version gets the version
/// form of the relative-operation warning.
pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    let mut versioned: Vec<String> = Vec::new();
    for r in resources {
        let Spec::EnvoyFilter(ef) = &r.spec else {
            continue;
        };
        let unprioritized = ef.priority.unwrap_or(0) == 0;
        for patch in &ef.config_patches {
            let Some(p) = &patch.patch else {
                break;
            };
            // What the patch is about: its value's `name`, else the filter
            // its listener match names.
            let target = match p.value.as_ref().and_then(|v| v.get("name")) {
                Some(name) => name
                    .as_str()
                    .map_or_else(|| name.to_string(), str::to_string),
                None if p.value.is_some() => patch
                    .r#match
                    .as_ref()
                    .and_then(|m| m.listener.as_ref())
                    .and_then(|l| l.filter_chain.as_ref())
                    .and_then(|f| f.filter.as_ref())
                    .and_then(|f| f.name.clone())
                    .unwrap_or_default(),
                None => String::new(),
            };
            let routes = matches!(
                patch.apply_to,
                Some(ApplyTo::RouteConfiguration | ApplyTo::HttpRoute)
            );
            let relative = match p.operation {
                Some(PatchOperation::Add) if routes => {
                    out.push(message("IST0153", Level::Error, r, "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.".into()));
                    false
                }
                Some(PatchOperation::Remove) if routes => {
                    out.push(message("IST0154", Level::Error, r, "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.".into()));
                    false
                }
                Some(PatchOperation::Replace)
                    if !matches!(
                        patch.apply_to,
                        Some(ApplyTo::NetworkFilter | ApplyTo::HttpFilter)
                    ) =>
                {
                    out.push(message(
                        "IST0152",
                        Level::Error,
                        r,
                        "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER."
                            .into(),
                    ));
                    false
                }
                Some(
                    PatchOperation::Remove
                    | PatchOperation::Replace
                    | PatchOperation::InsertBefore
                    | PatchOperation::InsertAfter,
                ) => true,
                _ => false,
            };
            if relative && unprioritized {
                if versioned.contains(&target) {
                    out.push(message(
                        "IST0155",
                        Level::Warning,
                        r,
                        RELATIVE_WITH_VERSION.into(),
                    ));
                } else {
                    out.push(message("IST0151", Level::Warning, r, RELATIVE.into()));
                }
            }
            let has_version = patch
                .r#match
                .as_ref()
                .and_then(|m| m.proxy.as_ref())
                .and_then(|p| p.proxy_version.as_deref())
                .is_some_and(|v| !v.is_empty());
            if has_version {
                versioned.push(target);
            }
        }
    }
}
