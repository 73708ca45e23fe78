//! Authorization end to end: least privilege, Reader, deny assignments over Owner, PIM expiry,
//! groups, 404-not-403 for what the caller cannot see, and checkAccess reasons.

use crate::harness::Server;
use serde_json::json;

#[test]
fn a_new_service_principal_can_do_nothing() {
    let s = Server::start();
    s.admin("PUT", &s.rg("secret-rg"), Some(json!({})));
    let (_, client, secret) = s.new_sp("nobody");
    let t = s.sp_token(&client, &secret).unwrap();
    let rg = s.rg("secret-rg");
    let cases = [
        ("GET", rg.clone(), 404),
        ("PUT", rg.clone(), 404),
        ("DELETE", rg.clone(), 404),
        ("GET", s.rg("missing"), 404),
        ("GET", format!("/subscriptions/{}", s.sub()), 404),
        (
            "GET",
            format!("/subscriptions/{}/resourceGroups", s.sub()),
            404,
        ),
        ("GET", "/providers/Strata.Identity/users".into(), 200),
        ("PUT", "/providers/Strata.Identity/users/eve".into(), 404),
        ("GET", "/providers/Strata.Audit/entries".into(), 403),
        (
            "PUT",
            "/providers/Strata.Authorization/roleAssignments/self-grant".into(),
            404,
        ),
    ];
    for (m, p, want) in cases {
        let body = json!({ "properties": { "password": "Whatever-12345", "principalId": "x", "roleDefinitionId": "y" } });
        let (st, v, _) = s.req(m, &p, Some(&t), Some(&body), &[]);
        assert_eq!(st, want, "{m} {p}: {v}");
    }
    // Lists are filtered to what the caller may read: nothing.
    let (_, v, _) = s.req("GET", "/subscriptions", Some(&t), None, &[]);
    assert_eq!(v["value"].as_array().unwrap().len(), 0);
    let (_, v, _) = s.req(
        "GET",
        "/providers/Strata.Identity/users",
        Some(&t),
        None,
        &[],
    );
    assert_eq!(v["value"].as_array().unwrap().len(), 0);
    // The 404 for an existing group is indistinguishable from a missing one.
    let (_, a, _) = s.req("GET", &rg, Some(&t), None, &[]);
    assert_eq!(a["error"]["code"], "ResourceNotFound");
}

#[test]
fn reader_reads_and_cannot_write() {
    let s = Server::start();
    let rg = s.rg("shared");
    s.admin("PUT", &rg, Some(json!({})));
    let (oid, client, secret) = s.new_sp("reader");
    s.assign(&oid, "Reader", &format!("/subscriptions/{}", s.sub()));
    let t = s.sp_token(&client, &secret).unwrap();
    let (st, v, _) = s.req("GET", &rg, Some(&t), None, &[]);
    assert_eq!(st, 200, "{v}");
    let (st, v, _) = s.req(
        "PATCH",
        &rg,
        Some(&t),
        Some(&json!({ "tags": { "x": "y" } })),
        &[],
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Strata.Resources/subscriptions/resourceGroups/write"),
        "{v}"
    );
    let (st, _, _) = s.req("DELETE", &rg, Some(&t), None, &[]);
    assert_eq!(st, 403);
    // Outside the assigned subscription scope nothing is visible.
    let (st, _, _) = s.req(
        "GET",
        "/providers/Strata.Identity/servicePrincipals/reader",
        Some(&t),
        None,
        &[],
    );
    assert_eq!(st, 404);
}

#[test]
fn deny_assignment_overrides_owner() {
    let s = Server::start();
    let rg = s.rg("locked");
    s.admin("PUT", &rg, Some(json!({})));
    let (oid, client, secret) = s.new_sp("owner2");
    s.assign(&oid, "Owner", "");
    let t = s.sp_token(&client, &secret).unwrap();
    assert_eq!(
        s.req(
            "PATCH",
            &rg,
            Some(&t),
            Some(&json!({ "tags": { "a": "1" } })),
            &[]
        )
        .0,
        200
    );
    let (st, v) = s.admin(
        "PUT",
        &format!("{rg}/providers/Strata.Authorization/denyAssignments/no-writes"),
        Some(json!({ "properties": {
            "denyAssignmentName": "freeze",
            "permissions": [{ "actions": ["*/write", "*/delete"] }],
            "principals": [strata_authz::EVERYONE],
            "excludePrincipals": [s.running().app.dir().sp_by_app_id(s.profile.client_id.as_deref().unwrap()).unwrap().id],
        }})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v, _) = s.req(
        "PATCH",
        &rg,
        Some(&t),
        Some(&json!({ "tags": { "a": "2" } })),
        &[],
    );
    assert_eq!(st, 403, "deny beats Owner: {v}");
    assert_eq!(
        s.req("GET", &rg, Some(&t), None, &[]).0,
        200,
        "reads are not denied"
    );
    // checkAccess names the deny assignment.
    let (st, v) = s.admin("POST", "/providers/Strata.Authorization/checkAccess", Some(json!({ "principalId": oid, "action": "Strata.Resources/subscriptions/resourceGroups/write", "scope": rg })));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["decision"], "Denied");
    assert_eq!(v["detail"]["kind"], "denyAssignment");
    assert!(v["reason"].as_str().unwrap().contains("freeze"), "{v}");
    // The excluded admin still writes.
    assert_eq!(
        s.admin("PATCH", &rg, Some(json!({ "tags": { "a": "3" } })))
            .0,
        200
    );
}

#[test]
fn pim_activation_grants_for_a_bounded_time() {
    let s = Server::start();
    let rg = s.rg("pim");
    s.admin("PUT", &rg, Some(json!({})));
    let (oid, client, secret) = s.new_sp("oncall");
    let (_, roles) = s.admin(
        "GET",
        "/providers/Strata.Authorization/roleDefinitions",
        None,
    );
    let contributor = roles["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["properties"]["roleName"] == "Network Contributor")
        .unwrap()["name"]
        .clone();
    let (st, v) = s.admin(
        "PUT",
        &format!("{rg}/providers/Strata.Authorization/roleEligibilitySchedules/e1"),
        Some(json!({ "properties": { "principalId": oid, "roleDefinitionId": contributor } })),
    );
    assert_eq!(st, 201, "{v}");
    let t = s.sp_token(&client, &secret).unwrap();
    let check = |token: &str| s.req("GET", &rg, Some(token), None, &[]).0;
    assert_eq!(check(&t), 404, "eligibility alone grants nothing");
    let act = |name: &str, secs: u64, why: &str| {
        s.req(
            "PUT",
            &format!("{rg}/providers/Strata.Authorization/roleAssignmentScheduleRequests/{name}"),
            Some(&t),
            Some(&json!({ "properties": { "roleDefinitionId": contributor, "justification": why, "durationSecs": secs } })),
            &[],
        )
    };
    assert_eq!(act("a0", 60, "").0, 400, "a justification is required");
    assert_eq!(
        act("a1", 9 * 3600, "incident 42").0,
        400,
        "longer than the 8 h maximum"
    );
    let (st, v, _) = act("a2", 3, "incident 42");
    assert_eq!(st, 201, "{v}");
    assert_eq!(check(&t), 200, "active now");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(check(&t), 404, "expired on time");
}

#[test]
fn group_membership_grants_roles() {
    let s = Server::start();
    let (oid, client, secret) = s.new_sp("member");
    let (st, v) = s.admin(
        "PUT",
        "/providers/Strata.Identity/groups/ops",
        Some(json!({ "properties": { "members": [oid] } })),
    );
    assert_eq!(st, 201, "{v}");
    let gid = v["properties"]["objectId"].as_str().unwrap().to_string();
    s.assign(&gid, "Reader", "");
    let t = s.sp_token(&client, &secret).unwrap();
    let (st, v, _) = s.req(
        "GET",
        &format!("/subscriptions/{}", s.sub()),
        Some(&t),
        None,
        &[],
    );
    assert_eq!(st, 200, "{v}");
    // Removing the member takes effect at once.
    s.admin(
        "PATCH",
        "/providers/Strata.Identity/groups/ops",
        Some(json!({ "properties": { "members": [] } })),
    );
    assert_eq!(
        s.req(
            "GET",
            &format!("/subscriptions/{}", s.sub()),
            Some(&t),
            None,
            &[]
        )
        .0,
        404
    );
}

#[test]
fn custom_roles_and_assignment_rules() {
    let s = Server::start();
    let (oid, client, secret) = s.new_sp("tagger");
    let (st, v) = s.admin(
        "PUT",
        "/providers/Strata.Authorization/roleDefinitions/rg-tagger",
        Some(json!({ "properties": {
            "roleName": "Resource Group Tagger",
            "permissions": [{ "actions": ["Strata.Resources/subscriptions/resourceGroups/*"], "notActions": ["Strata.Resources/subscriptions/resourceGroups/delete"] }],
            "assignableScopes": [format!("/subscriptions/{}", s.sub())],
        }})),
    );
    assert_eq!(st, 201, "{v}");
    // Not assignable outside its assignable scopes.
    let (st, v) = s.admin(
        "PUT",
        "/providers/Strata.Authorization/roleAssignments/bad",
        Some(json!({ "properties": { "principalId": oid, "roleDefinitionId": "rg-tagger" } })),
    );
    assert_eq!(st, 400, "{v}");
    s.assign(
        &oid,
        "Resource Group Tagger",
        &format!("/subscriptions/{}", s.sub()),
    );
    let t = s.sp_token(&client, &secret).unwrap();
    assert_eq!(
        s.req("PUT", &s.rg("t1"), Some(&t), Some(&json!({})), &[]).0,
        201
    );
    assert_eq!(s.req("DELETE", &s.rg("t1"), Some(&t), None, &[]).0, 403);
    // A role in use cannot be deleted; built-ins never.
    assert_eq!(
        s.admin(
            "DELETE",
            "/providers/Strata.Authorization/roleDefinitions/rg-tagger",
            None
        )
        .0,
        409
    );
    assert_eq!(
        s.admin(
            "DELETE",
            &format!(
                "/providers/Strata.Authorization/roleDefinitions/{}",
                strata_authz::builtin::OWNER
            ),
            None
        )
        .0,
        400
    );
}
