//! Bootstrap tokens: signed by the CA, naming one identity, expiring.

mod common;

use std::time::{Duration, SystemTime};

use common::new_ca;
use weft_identity::SpiffeId;
use weft_identity::token::{self, TokenError};

#[test]
fn tokens_verify_only_against_their_ca_and_only_in_time() {
    let (_, ca) = new_ca("token");
    let (_, other) = new_ca("token-other");
    let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .expect("id");
    let now = SystemTime::now();
    let t = token::issue(&ca, &id, Duration::from_secs(3600), now).expect("issue");
    assert!(t.starts_with("weft1."));
    assert_eq!(token::verify(&t, ca.certificate(), now), Ok(id.clone()));
    assert_eq!(
        token::verify(&format!(" {t}\n"), ca.certificate(), now),
        Ok(id.clone()),
        "whitespace from a file"
    );
    assert_eq!(
        token::verify(&t, other.certificate(), now),
        Err(TokenError::Signature)
    );
    assert_eq!(
        token::verify(&t, ca.certificate(), now + Duration::from_secs(3700)),
        Err(TokenError::Expired(100))
    );
    assert_eq!(
        token::verify(&t, ca.certificate(), now - Duration::from_secs(3600)),
        Err(TokenError::NotYetValid)
    );
    // Claims cannot be swapped under a valid signature.
    let parts: Vec<&str> = t.split('.').collect();
    let forged = token::issue(
        &ca,
        &"spiffe://cluster.local/ns/kube-system/sa/admin"
            .parse()
            .expect("id"),
        Duration::from_secs(60),
        now,
    )
    .expect("issue");
    let forged_claims = forged.split('.').nth(1).expect("claims");
    let mixed = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(
        token::verify(&mixed, ca.certificate(), now),
        Err(TokenError::Signature)
    );
    for bad in ["", "weft1", "weft1.x", "jwt.a.b", "weft1.!!.??"] {
        assert!(
            token::verify(bad, ca.certificate(), now).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        TokenError::Malformed.to_string(),
        "malformed token: expected weft1.<claims>.<signature>"
    );
}
