//! Role-definition validation: each rule, with its user-facing message.

use strata_authz::{
    Permission, RoleDefinition, ValidationError, validate_role_definition, validate_scope,
};

use crate::support::{custom_role, data_perm, perm};

fn valid() -> RoleDefinition {
    let mut role = custom_role(
        "r1",
        "Disk Reader",
        vec![
            perm(&["Strata.Compute/disks/read"], &[]),
            data_perm(&["Strata.KeyVault/vaults/keys/read"], &[]),
        ],
    );
    role.assignable_scopes = vec![
        "/subscriptions/s1".into(),
        "/subscriptions/s2/resourceGroups/rg/".into(),
    ];
    role
}

fn err(edit: impl FnOnce(&mut RoleDefinition)) -> String {
    let mut role = valid();
    edit(&mut role);
    validate_role_definition(&role).unwrap_err().to_string()
}

#[test]
fn valid_role_passes() {
    assert_eq!(validate_role_definition(&valid()), Ok(()));
}

#[test]
fn each_rule_has_a_message() {
    let long = "a".repeat(257);
    let got = [
        err(|r| r.role_name = " ".into()),
        err(|r| r.permissions.clear()),
        err(|r| {
            r.permissions.push(Permission {
                not_actions: vec!["*".into()],
                ..Permission::default()
            })
        }),
        err(|r| r.permissions[0].actions.push(String::new())),
        err(|r| {
            r.permissions[0]
                .not_actions
                .push("Strata.Compute/disks/ read".into())
        }),
        err(|r| {
            r.permissions[1]
                .data_actions
                .push("Strata.KeyVault/vaults/keys/dé".into())
        }),
        err(|r| r.permissions[1].not_data_actions.push(long.clone())),
        err(|r| r.assignable_scopes.clear()),
        err(|r| r.assignable_scopes.push("subscriptions/s1".into())),
        err(|r| {
            r.assignable_scopes
                .push("/subscriptions/s1/things/x".into())
        }),
        err(|r| {
            r.assignable_scopes
                .push("/subscriptions//resourceGroups".into())
        }),
        err(|r| {
            r.assignable_scopes
                .push("/providers/Strata.Identity".into())
        }),
    ];
    expect_test::expect![[r#"
        the role name is empty; give the role a name
        the role has no permissions; add a permission with at least one action or data action
        permission 2 has no actions and no data actions; add at least one or remove the permission
        invalid actions pattern '' in permission 0: it is empty; use printable ASCII without spaces, at most 256 characters, e.g. 'Strata.Compute/virtualMachines/read'
        invalid notActions pattern 'Strata.Compute/disks/ read' in permission 0: it contains a space, control or non-ASCII character; use printable ASCII without spaces, at most 256 characters, e.g. 'Strata.Compute/virtualMachines/read'
        invalid dataActions pattern 'Strata.KeyVault/vaults/keys/dé' in permission 1: it contains a space, control or non-ASCII character; use printable ASCII without spaces, at most 256 characters, e.g. 'Strata.Compute/virtualMachines/read'
        invalid notDataActions pattern 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' in permission 1: it is too long; use printable ASCII without spaces, at most 256 characters, e.g. 'Strata.Compute/virtualMachines/read'
        the role has no assignable scopes; add at least one, such as '/subscriptions/{id}'
        invalid scope 'subscriptions/s1': it must start with '/'; use '/', '/subscriptions/{id}', '/subscriptions/{id}/resourceGroups/{name}' or a resource id
        invalid scope '/subscriptions/s1/things/x': it has an unexpected segment; expected 'subscriptions', 'resourceGroups' or 'providers'; use '/', '/subscriptions/{id}', '/subscriptions/{id}/resourceGroups/{name}' or a resource id
        invalid scope '/subscriptions//resourceGroups': it has an empty segment; use '/', '/subscriptions/{id}', '/subscriptions/{id}/resourceGroups/{name}' or a resource id
        invalid scope '/providers/Strata.Identity': the resource type and name are missing after the provider namespace; use '/', '/subscriptions/{id}', '/subscriptions/{id}/resourceGroups/{name}' or a resource id"#]]
    .assert_eq(&got.join("\n"));
}

#[test]
fn pattern_length_boundary() {
    let mut role = valid();
    role.permissions[0].actions.push("a".repeat(256));
    assert_eq!(validate_role_definition(&role), Ok(()));
}

#[test]
fn scopes() {
    assert_eq!(validate_scope("/"), Ok(()));
    assert_eq!(
        validate_scope("/providers/Strata.Identity/users/alice"),
        Ok(())
    );
    assert!(matches!(
        validate_scope("/subscriptions/s1/resourceGroups"),
        Err(ValidationError::InvalidScope { .. })
    ));
}
