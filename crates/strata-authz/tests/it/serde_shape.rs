//! Wire shapes: Azure-style camelCase JSON for the model and for decisions.

use strata_authz::{DenyAssignment, Engine, RoleDefinition, RoleType, builtin};

#[test]
fn role_definition_round_trips_azure_json() {
    let json = r#"{
        "id": "r1",
        "roleName": "Disk Reader",
        "description": "reads disks",
        "roleType": "CustomRole",
        "permissions": [{ "actions": ["Strata.Compute/disks/read"], "notDataActions": [] }],
        "assignableScopes": ["/subscriptions/s1"]
    }"#;
    let role: RoleDefinition = serde_json::from_str(json).unwrap();
    assert_eq!(role.role_type, RoleType::CustomRole);
    assert!(!role.privileged);
    assert!(role.permissions[0].data_actions.is_empty());
    let back = serde_json::to_value(&role).unwrap();
    assert_eq!(back["roleType"], "CustomRole");
    assert_eq!(back["assignableScopes"][0], "/subscriptions/s1");
    assert_eq!(back["permissions"][0]["notActions"], serde_json::json!([]));
    let owner = serde_json::to_value(&builtin::roles()[0]).unwrap();
    assert_eq!(owner["roleType"], "BuiltInRole");
    assert_eq!(owner["privileged"], true);
}

#[test]
fn deny_assignment_defaults() {
    let deny: DenyAssignment = serde_json::from_str(
        r#"{"id":"d","denyAssignmentName":"n","permissions":[{"actions":["*"]}],"scope":"/","principals":["p"]}"#,
    )
    .unwrap();
    assert!(deny.exclude_principals.is_empty());
    assert!(!deny.do_not_apply_to_child_scopes);
}

#[test]
fn decision_json() {
    let engine: Engine = crate::support::engine();
    let groups = vec!["g-ops".to_string()];
    let decision = engine.check(&strata_authz::Request {
        subject: strata_authz::Subject {
            principal_id: "olivia",
            group_ids: &groups,
        },
        action: "Strata.Compute/virtualMachines/read",
        data_action: false,
        scope: "/subscriptions/s1",
        now: 0,
    });
    expect_test::expect![[r#"
        {
          "effect": "allow",
          "action": "Strata.Compute/virtualMachines/read",
          "scope": "/subscriptions/s1",
          "reason": {
            "kind": "roleAssignment",
            "assignmentId": "a-ops-contrib",
            "roleDefinitionId": "b24988ac-6180-42a0-ab88-20f7382dd24c",
            "roleName": "Contributor",
            "scope": "/subscriptions/s1",
            "viaGroup": "g-ops"
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&decision).unwrap());
}
