//! IST0139 (InvalidWebhook) over the injector's MutatingWebhookConfigurations,
//! as Istio's webhook analyzer checks them: for every namespace and pod
//! label combination that injection keys on (`istio-injection`,
//! `sidecar.istio.io/inject`, and `istio.io/rev` for each revision the
//! webhooks name), at most one Istio webhook may match; and a webhook that
//! calls a Service must name one that exists. IST0146 and IST0147: a
//! Deployment or Pod whose `istio-proxy` container has `image: auto` (left
//! for the injector to fill in) that no Istio webhook will inject. IST0163
//! and IST0164: webhooks that call an external control plane badly.

use std::collections::BTreeSet;

use weft_api::types::common::Labels;
use weft_api::types::kube::Webhook;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

const REV: &str = "istio.io/rev";

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    // Istio's webhooks: those of configurations that name a revision or
    // hold a webhook named `*istio.io`.
    let mut hooks: Vec<(&Resource, &Webhook)> = Vec::new();
    let mut revisions = BTreeSet::new();
    for r in resources {
        let Spec::MutatingWebhookConfiguration(webhooks) = &r.spec else {
            continue;
        };
        let revs = revisions_of(r, webhooks);
        if revs.is_empty() && !webhooks.iter().any(|w| w.name.ends_with("istio.io")) {
            continue;
        }
        revisions.extend(revs);
        hooks.extend(webhooks.iter().map(|w| (r, w)));
    }
    let variants = |key: &str| {
        let base: Vec<Labels> = ["", "enabled", "disabled"]
            .into_iter()
            .map(|v| {
                let mut l = Labels::new();
                if !v.is_empty() {
                    let v = if key == "istio-injection" {
                        v
                    } else if v == "enabled" {
                        "true"
                    } else {
                        "false"
                    };
                    l.insert(key.to_string(), v.to_string());
                }
                l
            })
            .collect();
        let mut all = base.clone();
        for rev in &revisions {
            all.extend(base.iter().map(|l| {
                let mut l = l.clone();
                l.insert(REV.to_string(), rev.clone());
                l
            }));
        }
        all
    };
    let namespaces = variants("istio-injection");
    let objects = variants("sidecar.istio.io/inject");
    let id = |(r, w): &(&Resource, &Webhook)| format!("{}/{}", r.name, w.name);
    let mut overlaps = BTreeSet::new();
    for ns in &namespaces {
        for obj in &objects {
            let matched: BTreeSet<(String, usize)> = hooks
                .iter()
                .enumerate()
                .filter(|(_, (_, w))| {
                    w.namespace_selector.as_ref().is_none_or(|s| s.matches(ns))
                        && w.object_selector.as_ref().is_none_or(|s| s.matches(obj))
                })
                .map(|(i, h)| (id(h), i))
                .collect();
            if matched.len() < 2 {
                continue;
            }
            for (name, i) in &matched {
                let others: Vec<&str> = matched
                    .iter()
                    .filter(|(n, _)| n != name)
                    .map(|(n, _)| n.as_str())
                    .collect();
                overlaps.insert((*i, others.join(" ")));
            }
        }
    }
    for (i, others) in overlaps {
        out.push(message(
            "IST0139",
            Level::Error,
            hooks[i].0,
            format!(
                "Webhook overlaps with others: [{others}]. This may cause injection to occur twice."
            ),
        ));
    }
    // Istio prints a message once however many webhooks repeat it.
    let mut reported = BTreeSet::new();
    for (r, w) in &hooks {
        let Some(svc) = w.client_config.as_ref().and_then(|c| c.service.as_ref()) else {
            continue;
        };
        if !reported.insert((&r.name, &svc.namespace, &svc.name)) {
            continue;
        }
        let exists = resources.iter().any(|s| {
            matches!(s.spec, Spec::Service(_))
                && s.namespace() == svc.namespace
                && s.name == svc.name
        });
        if !exists {
            out.push(message(
                "IST0139",
                Level::Error,
                r,
                format!(
                    "Injector refers to a control plane service that does not exist: {}/{}.",
                    svc.namespace, svc.name
                ),
            ));
        }
    }
}

/// The revisions a configuration serves: its `istio.io/rev` label and
/// those its webhooks' selectors name.
fn revisions_of(r: &Resource, webhooks: &[Webhook]) -> BTreeSet<String> {
    let mut revs: BTreeSet<String> = r.meta.labels.get(REV).cloned().into_iter().collect();
    for s in webhooks
        .iter()
        .flat_map(|w| [&w.namespace_selector, &w.object_selector])
        .flatten()
    {
        revs.extend(s.match_labels.get(REV).cloned());
        for e in s.match_expressions.iter().filter(|e| e.key == REV) {
            revs.extend(e.values.iter().cloned());
        }
    }
    revs
}

/// IST0147 for every Pod with `image: auto` (a Pod is never injected
/// after it is created); IST0146 for a Deployment whose pods no Istio
/// webhook selects.
pub(crate) fn image_auto(resources: &[Resource], out: &mut Vec<Message>) {
    let auto = |spec: Option<&weft_api::types::kube::PodSpec>| {
        spec.is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.name == "istio-proxy" && c.image.as_deref() == Some("auto"))
        })
    };
    let istio_hooks: Vec<&Webhook> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::MutatingWebhookConfiguration(w) => Some(w),
            _ => None,
        })
        .flatten()
        .filter(|w| w.name.ends_with("istio.io"))
        .collect();
    let text = |kind: &str, name: &str| {
        format!(
            "{kind} {name} contains `image: auto` but does not match any Istio injection webhook selectors."
        )
    };
    for r in resources {
        match &r.spec {
            Spec::Pod(p) if auto(Some(p)) => {
                out.push(message("IST0147", Level::Error, r, text("Pod", &r.name)));
            }
            Spec::Deployment(d) => {
                let Some(template) = d.template.as_ref().filter(|t| auto(t.spec.as_ref())) else {
                    continue;
                };
                let empty = Labels::new();
                let ns_labels = resources
                    .iter()
                    .find(|n| matches!(n.spec, Spec::Namespace) && n.name == r.namespace())
                    .map_or(&empty, |n| &n.meta.labels);
                let injected = istio_hooks.iter().any(|w| {
                    w.namespace_selector
                        .as_ref()
                        .is_none_or(|s| s.matches(ns_labels))
                        && w.object_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(&template.metadata.labels))
                });
                if !injected {
                    out.push(message(
                        "IST0146",
                        Level::Warning,
                        r,
                        text("Deployment", &r.name),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// IST0163 and IST0164 for Istio's webhooks (validators named
/// `istiod-default-validator` or `istio-validator*`, injectors named
/// `istio-sidecar-injector*`) that call an external control plane by URL:
/// an IP address instead of a hostname (IST0164), or neither a URL nor a
/// Service (IST0163). Istio also looks the hostname up in DNS; `weft
/// analyze` reads files only and does not.
pub(crate) fn external_control_plane(resources: &[Resource], out: &mut Vec<Message>) {
    for r in resources {
        let webhooks = match &r.spec {
            Spec::ValidatingWebhookConfiguration(w)
                if r.name == "istiod-default-validator"
                    || r.name.starts_with("istio-validator") =>
            {
                w
            }
            Spec::MutatingWebhookConfiguration(w)
                if r.name.starts_with("istio-sidecar-injector") =>
            {
                w
            }
            _ => continue,
        };
        for w in webhooks {
            let config = w.client_config.as_ref();
            match config.and_then(|c| c.url.as_deref()) {
                Some(url) if url_host(url).parse::<std::net::IpAddr>().is_ok() => {
                    out.push(message(
                        "IST0164",
                        Level::Info,
                        r,
                        format!(
                            "The address ({url}) that was provided for the webhook ({}) to reach the ingress gateway on the external control plane cluster is an IP address. This is not recommended for a production environment.",
                            w.name
                        ),
                    ));
                }
                Some(_) => {}
                None if config.and_then(|c| c.service.as_ref()).is_none() => {
                    out.push(message(
                        "IST0163",
                        Level::Warning,
                        r,
                        format!(
                            "The hostname () that was provided for the webhook ({}) to reach the ingress gateway on the external control plane cluster is blank. Traffic may not flow properly.",
                            w.name
                        ),
                    ));
                }
                None => {}
            }
        }
    }
}

/// The host of a URL (`https://host:port/path`), without brackets for
/// IPv6 literals.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
}
