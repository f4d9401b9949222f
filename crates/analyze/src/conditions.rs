//! IST0171 (NegativeConditionStatus): a resource whose `status` (as a
//! controller wrote it, kept when the inputs are dumped from a cluster)
//! holds a condition that reports a problem, as Istio's condition analyzer
//! reads them: `istio.io/WaypointBound` false on Services, ServiceEntries
//! and WorkloadEntries; `ZtunnelAccepted` or `WaypointAccepted` false, or
//! `WaypointAccepted` true with reason `PartiallyInvalid`, on
//! AuthorizationPolicies; `Accepted`, `Programmed` or `ResolvedRefs` false
//! on Gateway API Gateways and on HTTPRoutes and GRPCRoutes (per parent).

use weft_api::yaml::Node;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    for r in resources {
        let Some(status) = r.node.get("status") else {
            continue;
        };
        let (negative, found): (fn(&Condition<'_>) -> bool, Vec<&Node>) = match &r.spec {
            Spec::Service(_) | Spec::ServiceEntry(_) | Spec::WorkloadEntry(_) => (
                |c| c.kind == "istio.io/WaypointBound" && c.status == "False",
                conditions(status),
            ),
            Spec::AuthorizationPolicy(_) => (
                |c| {
                    (matches!(c.kind, "ZtunnelAccepted" | "WaypointAccepted")
                        && c.status == "False")
                        || (c.kind == "WaypointAccepted"
                            && c.status == "True"
                            && c.reason == "PartiallyInvalid")
                },
                conditions(status),
            ),
            Spec::KubeGateway(_) => (gateway_api, conditions(status)),
            Spec::HttpRoute(_) | Spec::GrpcRoute(_) => (
                gateway_api,
                status
                    .get("parents")
                    .map(Node::items)
                    .unwrap_or_default()
                    .iter()
                    .flat_map(conditions)
                    .collect(),
            ),
            _ => continue,
        };
        for c in found.into_iter().filter_map(Condition::read) {
            if negative(&c) {
                out.push(message(
                    "IST0171",
                    Level::Warning,
                    r,
                    format!(
                        "A condition with a negative status is present: type={}, reason={}, message={}.",
                        c.kind, c.reason, c.message
                    ),
                ));
            }
        }
    }
}

fn gateway_api(c: &Condition<'_>) -> bool {
    matches!(c.kind, "Accepted" | "Programmed" | "ResolvedRefs") && c.status == "False"
}

struct Condition<'a> {
    kind: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl<'a> Condition<'a> {
    fn read(node: &'a Node) -> Option<Condition<'a>> {
        let field = |k: &str| node.get(k).and_then(Node::as_str).unwrap_or_default();
        Some(Condition {
            kind: node.get("type")?.as_str()?,
            status: field("status"),
            reason: field("reason"),
            message: field("message"),
        })
    }
}

fn conditions(status: &Node) -> Vec<&Node> {
    status
        .get("conditions")
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .collect()
}
