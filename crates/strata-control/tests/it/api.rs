//! The resource API: CRUD, etags and If-Match, bad input changes nothing, the change feed, the
//! audit proofs, rate limiting.

use crate::harness::Server;
use serde_json::json;

#[test]
fn resource_group_crud_etag_and_cascade() {
    let s = Server::start();
    let rg = s.rg("web");
    let (st, v, etag) = s.req(
        "PUT",
        &rg,
        Some(&s.admin_token),
        Some(&json!({ "location": "local", "tags": { "env": "dev" } })),
        &[],
    );
    assert_eq!(st, 201, "{v}");
    let etag = etag.unwrap();
    assert_eq!(v["etag"], etag.as_str());
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(v["type"], "Strata.Resources/subscriptions/resourceGroups");

    // Stale If-Match → 412, nothing changed; current If-Match → 200.
    let (st, _, _) = s.req(
        "PATCH",
        &rg,
        Some(&s.admin_token),
        Some(&json!({ "tags": { "env": "prod" } })),
        &[("if-match", "\"1\"")],
    );
    assert_eq!(st, 412);
    let (st, v, new_etag) = s.req(
        "PATCH",
        &rg,
        Some(&s.admin_token),
        Some(&json!({ "tags": { "env": "prod" } })),
        &[("if-match", &etag)],
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tags"]["env"], "prod");
    assert_ne!(new_etag.unwrap(), etag);
    // If-None-Match: * on an existing resource → 412.
    let (st, _, _) = s.req(
        "PUT",
        &rg,
        Some(&s.admin_token),
        Some(&json!({})),
        &[("if-none-match", "*")],
    );
    assert_eq!(st, 412);

    // A role assignment inside the group is deleted with it.
    let (oid, _, _) = s.new_sp("app");
    s.assign(&oid, "Reader", &rg);
    let (st, v) = s.admin(
        "GET",
        &format!("{rg}/providers/Strata.Authorization/roleAssignments"),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let (st, _) = s.admin("DELETE", &rg, None);
    assert_eq!(st, 200);
    assert_eq!(s.admin("GET", &rg, None).0, 404);
    assert!(
        s.running()
            .app
            .store
            .list_under(&rg.to_ascii_lowercase())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.admin("DELETE", &rg, None).0,
        204,
        "deleting what is gone is a no-op"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = Server::start();
    let rg = s.rg("bad");
    let before_rev = s.running().app.store.revision().unwrap();
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        ("PUT", rg.clone(), b"{not json".to_vec(), "InvalidRequestContent"),
        ("PUT", rg.clone(), br#"{"location":"local","surprise":1}"#.to_vec(), "InvalidRequestContent"),
        ("PUT", rg.clone(), br#"{"properties":{"unknownField":true}}"#.to_vec(), "InvalidRequestContent"),
        ("PUT", rg.clone(), br#"{"location":"bad location!"}"#.to_vec(), "InvalidLocation"),
        ("PUT", rg.clone(), br#"{"name":"other"}"#.to_vec(), "InvalidRequestContent"),
        ("PUT", format!("/subscriptions/{}/resourceGroups/bad..", s.sub()), b"{}".to_vec(), "InvalidResourceId"),
        ("PUT", format!("/subscriptions/{}/resourceGroups/a%20b", s.sub()), b"{}".to_vec(), "InvalidResourceId"),
        ("PUT", format!("{rg}/providers/Strata.Nope/things/x"), b"{}".to_vec(), "InvalidResourceType"),
        ("PUT", rg.clone(), vec![b' '; 300 * 1024], "RequestBodyTooLarge"),
        ("PUT", "/providers/Strata.Identity/users/bob".into(), br#"{"properties":{"password":"short"}}"#.to_vec(), "PasswordPolicy"),
        ("PUT", "/providers/Strata.Identity/users/bob".into(), br#"{"properties":{}}"#.to_vec(), "PasswordRequired"),
        (
            "PUT",
            "/providers/Strata.Authorization/roleAssignments/x1".into(),
            br#"{"properties":{"principalId":"nobody","roleDefinitionId":"acdd72a7-3385-48ef-bd42-f606fba81ae7"}}"#.to_vec(),
            "PrincipalNotFound",
        ),
    ];
    for (method, path, body, code) in cases {
        let url = format!("{}{}", s.endpoint(), path);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", s.admin_token))
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let resp = s.agent.run(req).unwrap();
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.into_body().read_json().unwrap();
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        s.running().app.store.revision().unwrap(),
        before_rev,
        "no bad request stored anything"
    );
}

#[test]
fn change_feed_and_audit_proofs() {
    let s = Server::start();
    let rev0 = s.running().app.store.revision().unwrap();
    s.admin("PUT", &s.rg("a"), Some(json!({})));
    s.admin("DELETE", &s.rg("a"), None);
    let (st, v) = s.admin(
        "GET",
        &format!("/providers/Strata.Resources/changes?since={rev0}"),
        None,
    );
    assert_eq!(st, 200);
    let changes = v["value"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{v}");
    assert_eq!(changes[0]["deleted"], false);
    assert_eq!(changes[1]["deleted"], true);
    assert!(changes[0]["resource"].get("internal").is_none());

    // Proofs verify against the signed checkpoint with the audit crate.
    s.rt.block_on(s.running().checkpoint_now());
    let (st, cp) = s.admin("GET", "/providers/Strata.Audit/checkpoints/latest", None);
    assert_eq!(st, 200, "{cp}");
    let signed: strata_audit::SignedCheckpoint =
        serde_json::from_value(cp["checkpoint"].clone()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(cp["publicKey"].as_str().unwrap()).unwrap();
    strata_audit::verify_checkpoint(&key, &signed).unwrap();
    let size = signed.checkpoint.tree_size;
    assert!(size >= 3);
    let (st, p) = s.admin(
        "GET",
        &format!("/providers/Strata.Audit/proofs/inclusion?seq=1&treeSize={size}"),
        None,
    );
    assert_eq!(st, 200, "{p}");
    let proof: Vec<strata_audit::Hash> = p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    let leaf: strata_audit::Hash = b64
        .decode(p["leafHash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    strata_audit::verify_inclusion(&leaf, 1, size, &proof, &signed.checkpoint.root_hash).unwrap();
    let (st, c) = s.admin(
        "GET",
        &format!("/providers/Strata.Audit/proofs/consistency?first=2&second={size}"),
        None,
    );
    assert_eq!(st, 200, "{c}");
    let proof: Vec<strata_audit::Hash> = c["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    let first: strata_audit::Hash = b64
        .decode(c["firstRootHash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    strata_audit::verify_consistency(2, size, &first, &signed.checkpoint.root_hash, &proof)
        .unwrap();
    let (st, e) = s.admin(
        "GET",
        "/providers/Strata.Audit/entries?from=0&limit=5",
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(e["value"][0]["entry"]["category"], "system");
}

#[test]
fn writes_and_denials_are_audited_atomically() {
    let s = Server::start();
    let n0 = s.audit_len();
    let (st, _) = s.admin("PUT", &s.rg("audited"), Some(json!({})));
    assert_eq!(st, 201);
    let rows = s.running().app.store.audit_rows(n0, 100).unwrap();
    let entries: Vec<strata_audit::AuditEntry> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.entry).unwrap())
        .collect();
    let write = entries
        .iter()
        .find(|e| e.category == "write")
        .expect("the write is audited");
    assert_eq!(
        write.action,
        "Strata.Resources/subscriptions/resourceGroups/write"
    );
    assert_eq!(write.status, 201);
    assert!(write.reason.contains("Owner"), "{}", write.reason);
    // A refused token is audited as a denial.
    let (st, _, _) = s.req("GET", "/subscriptions", Some("not-a-token"), None, &[]);
    assert_eq!(st, 401);
    let rows = s.running().app.store.audit_rows(n0, 100).unwrap();
    assert!(rows.iter().any(|r| {
        let e: strata_audit::AuditEntry = serde_json::from_slice(&r.entry).unwrap();
        e.status == 401 && e.category == "denial"
    }));
}

#[test]
fn per_principal_rate_limit_answers_429() {
    let s = Server::start_with(|c| c.rate_limit_per_sec = 2.0);
    let mut saw_429 = false;
    for _ in 0..20 {
        let (st, _, _) = s.req("GET", "/subscriptions", Some(&s.admin_token), None, &[]);
        if st == 429 {
            saw_429 = true;
            break;
        }
        assert_eq!(st, 200);
    }
    assert!(saw_429, "a burst beyond the limit is refused");
}
