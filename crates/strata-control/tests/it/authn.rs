//! Authentication: tokens, revocation, MFA, certificate credentials, key rotation, and that a
//! standard JWT library verifies Strata tokens from the JWKS alone.

use crate::harness::Server;
use serde_json::json;

#[test]
fn token_verifies_with_an_independent_library_using_only_the_jwks() {
    let s = Server::start();
    let (st, disco, _) = s.req("GET", "/.well-known/openid-configuration", None, None, &[]);
    assert_eq!(st, 200);
    assert_eq!(disco["issuer"], s.endpoint().as_str());
    let jwks_url = disco["jwks_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches(&s.endpoint())
        .to_string();
    let (st, jwks, _) = s.req("GET", &jwks_url, None, None, &[]);
    assert_eq!(st, 200);
    let header = jsonwebtoken::decode_header(&s.admin_token).unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[s.endpoint()]);
    validation.set_audience(&["strata"]);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(&s.admin_token, &key, &validation).unwrap();
    assert_eq!(data.claims["tid"], s.profile.tenant_id.as_str());
    assert_eq!(data.claims["ptype"], "servicePrincipal");
    let lifetime = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 600, "tokens live 10 minutes by default");
}

#[test]
fn bad_credentials_and_tokens_are_refused() {
    let s = Server::start();
    let id = s.profile.client_id.clone().unwrap();
    assert!(s.sp_token(&id, "stsec_wrong").is_err());
    assert!(
        s.sp_token("00000000-0000-0000-0000-000000000001", "x")
            .is_err()
    );
    let (st, v) = s.token_request(&[("grant_type", "implicit")]);
    assert_eq!(st, 400);
    assert_eq!(v["error"], "unsupported_grant_type");
    for bad in ["", "Bearer", "Bearer x.y.z", "Basic abc"] {
        let (st, v, _) = s.req(
            "GET",
            "/subscriptions",
            None,
            None,
            &[("authorization", bad)],
        );
        assert_eq!(st, 401, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "AuthenticationFailed");
    }
    // A token with a flipped signature byte.
    let mut t = s.admin_token.clone().into_bytes();
    let last = t.len() - 2;
    t[last] = if t[last] == b'A' { b'B' } else { b'A' };
    let (st, _, _) = s.req(
        "GET",
        "/subscriptions",
        Some(std::str::from_utf8(&t).unwrap()),
        None,
        &[],
    );
    assert_eq!(st, 401);
}

#[test]
fn revoked_principal_is_refused_at_once() {
    let s = Server::start();
    let (oid, client, secret) = s.new_sp("revokee");
    s.assign(&oid, "Reader", "");
    let token = s.sp_token(&client, &secret).unwrap();
    assert_eq!(
        s.req("GET", "/subscriptions", Some(&token), None, &[]).0,
        200
    );
    let (st, _) = s.admin(
        "POST",
        "/providers/Strata.Identity/servicePrincipals/revokee/revokeSessions",
        Some(json!({})),
    );
    assert_eq!(st, 200);
    let (st, v, _) = s.req("GET", "/subscriptions", Some(&token), None, &[]);
    assert_eq!(
        st, 401,
        "the unexpired token is refused on the very next request: {v}"
    );
    // A fresh sign-in works again.
    let token2 = s.sp_token(&client, &secret).unwrap();
    assert_eq!(
        s.req("GET", "/subscriptions", Some(&token2), None, &[]).0,
        200
    );
    // Disabling refuses both existing tokens and new sign-ins.
    let (st, _) = s.admin(
        "PATCH",
        "/providers/Strata.Identity/servicePrincipals/revokee",
        Some(json!({ "properties": { "accountEnabled": false } })),
    );
    assert_eq!(st, 200);
    assert_eq!(
        s.req("GET", "/subscriptions", Some(&token2), None, &[]).0,
        401
    );
    assert!(s.sp_token(&client, &secret).is_err());
}

#[test]
fn privileged_roles_need_mfa_for_users() {
    let s = Server::start();
    let (st, v) = s.admin(
        "PUT",
        "/providers/Strata.Identity/users/alice",
        Some(json!({ "properties": { "password": "Correct-horse-42" } })),
    );
    assert_eq!(st, 201, "{v}");
    assert!(
        v["properties"].get("password").is_none() && v.get("internal").is_none(),
        "no secret is echoed: {v}"
    );
    let oid = v["properties"]["objectId"].as_str().unwrap().to_string();
    s.assign(&oid, "Owner", "");
    let (st, v) = s.token_request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "wrong-password-1"),
    ]);
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_grant")));
    let (st, v) = s.token_request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "Correct-horse-42"),
    ]);
    assert_eq!(st, 200, "{v}");
    let pwd_only = v["access_token"].as_str().unwrap().to_string();
    let (st, v, _) = s.req(
        "PUT",
        &s.rg("alice-rg"),
        Some(&pwd_only),
        Some(&json!({})),
        &[],
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"]["code"], "MfaRequired");

    let (st, v) = s.admin(
        "POST",
        "/providers/Strata.Identity/users/alice/enableMfa",
        Some(json!({})),
    );
    assert_eq!(st, 200, "{v}");
    let seed =
        strata_identity::totp::from_base32(v["secretOutput"]["totpSecret"].as_str().unwrap())
            .unwrap();
    let (st, v) = s.token_request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "Correct-horse-42"),
    ]);
    assert_eq!(st, 400, "MFA is now required to sign in: {v}");
    let code = strata_identity::totp::code(&seed, strata_types::time::now_unix());
    let (st, v) = s.token_request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "Correct-horse-42"),
        ("totp", &code),
    ]);
    assert_eq!(st, 200, "{v}");
    let mfa = v["access_token"].as_str().unwrap().to_string();
    let (st, v) = s.token_request(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "Correct-horse-42"),
        ("totp", &code),
    ]);
    assert_eq!(st, 400, "a TOTP code works once: {v}");
    let (st, v, _) = s.req("PUT", &s.rg("alice-rg"), Some(&mfa), Some(&json!({})), &[]);
    assert_eq!(st, 201, "{v}");
}

#[test]
fn certificate_credentials_sign_in_with_a_client_assertion() {
    use base64::Engine as _;
    let s = Server::start();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../strata-identity/tests/it/fixtures");
    let cert = std::fs::read_to_string(fixtures.join("ec-p256.cert.pem")).unwrap();
    let key_pem = std::fs::read_to_string(fixtures.join("ec-p256.key.pem")).unwrap();
    let (_, client, _) = s.new_sp("certapp");
    let (st, v) = s.admin(
        "POST",
        "/providers/Strata.Identity/servicePrincipals/certapp/addCertificate",
        Some(json!({ "certificate": cert })),
    );
    assert_eq!(st, 200, "{v}");
    let der: Vec<u8> = base64::engine::general_purpose::STANDARD
        .decode(
            key_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = strata_types::time::now_unix();
    let assertion = |jti: &str| {
        let header = b64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = b64.encode(serde_json::to_vec(&json!({ "iss": client, "sub": client, "aud": format!("{}/oauth2/token", s.endpoint()), "exp": now + 300, "jti": jti })).unwrap());
        let input = format!("{header}.{claims}");
        let sig = kp.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64.encode(sig.as_ref()))
    };
    let a = assertion("one");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client.as_str()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", a.as_str()),
    ];
    let (st, v) = s.token_request(&form);
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.token_request(&form);
    assert_eq!(st, 401, "a client assertion is single-use: {v}");
}

#[test]
fn signing_key_rotation_keeps_old_tokens_valid() {
    let s = Server::start();
    let old = s.admin_token.clone();
    let new_kid = s.running().app.rotate_signing_key().unwrap();
    let (_, jwks, _) = s.req("GET", "/.well-known/jwks.json", None, None, &[]);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(s.req("GET", "/subscriptions", Some(&old), None, &[]).0, 200);
    let fresh = s
        .sp_token(
            s.profile.client_id.as_deref().unwrap(),
            s.profile.client_secret.as_deref().unwrap(),
        )
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        new_kid
    );
    assert_eq!(
        s.req("GET", "/subscriptions", Some(&fresh), None, &[]).0,
        200
    );
}

#[test]
fn signing_keys_rotate_on_schedule() {
    let s = Server::start_with(|c| {
        c.token_lifetime_secs = 2;
        c.key_rotation_secs = 2;
    });
    let first = jsonwebtoken::decode_header(&s.admin_token)
        .unwrap()
        .kid
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let (_, jwks, _) = s.req("GET", "/.well-known/jwks.json", None, None, &[]);
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids.len(),
        2,
        "the active key and its predecessor are published"
    );
    let fresh = s
        .sp_token(
            s.profile.client_id.as_deref().unwrap(),
            s.profile.client_secret.as_deref().unwrap(),
        )
        .unwrap();
    let now_kid = jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap();
    assert_ne!(now_kid, first, "a new key signs after the rotation period");
    assert!(kids.contains(&now_kid.as_str()));
}
