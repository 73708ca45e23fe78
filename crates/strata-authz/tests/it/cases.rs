//! Data-driven decision cases against the fixture tenant in `support`: one line per question.

use strata_authz::{BuildError, Engine, builtin};

use crate::support::*;

const VM_READ: &str = "Strata.Compute/virtualMachines/read";
const VM_WRITE: &str = "Strata.Compute/virtualMachines/write";
const VM_DELETE: &str = "Strata.Compute/virtualMachines/delete";
const VM_START: &str = "Strata.Compute/virtualMachines/start/action";
const KEY_READ: &str = "Strata.KeyVault/vaults/keys/read";
const KEY_DECRYPT: &str = "Strata.KeyVault/vaults/keys/decrypt/action";
const KEY_ENCRYPT: &str = "Strata.KeyVault/vaults/keys/encrypt/action";
const KEY_SIGN: &str = "Strata.KeyVault/vaults/keys/sign/action";
const KEY_DELETE: &str = "Strata.KeyVault/vaults/keys/delete";
const KEY_CREATE: &str = "Strata.KeyVault/vaults/keys/create/action";
const LOCKED_VM: &str =
    "/subscriptions/s1/resourceGroups/locked/providers/Strata.Compute/virtualMachines/vm9";
const OTHER_KV: &str = "/subscriptions/s1/resourceGroups/rg1/providers/Strata.KeyVault/vaults/kv2";

const M: bool = false; // management action
const D: bool = true; // data action
const NOW: i64 = 1_500;

/// (principal, groups, action, data action?, scope, now, expected rendering)
type Case = (
    &'static str,
    &'static [&'static str],
    &'static str,
    bool,
    &'static str,
    i64,
    &'static str,
);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- scope inheritance
    ("alice", &[], VM_READ, M, VM1, NOW, "allow a-alice-reader"),
    ("alice", &[], VM_READ, M, S1, NOW, "allow a-alice-reader"),
    ("alice", &[], VM_READ, M, "/subscriptions/s1/", NOW, "allow a-alice-reader"),
    ("alice", &[], VM_READ, M, "/subscriptions/s2", NOW, "deny -"),
    ("alice", &[], VM_READ, M, "/subscriptions/s10", NOW, "deny -"),
    ("alice", &[], VM_READ, M, "/", NOW, "deny -"),
    ("alice", &[], VM_WRITE, M, VM1, NOW, "deny -"),
    ("carol", &[], VM_START, M, RG1, NOW, "deny -"),
    // --- case-insensitivity (actions, scopes, principal ids, stored assignments)
    ("alice", &[], "strata.compute/VIRTUALMACHINES/READ", M, "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG1/", NOW, "allow a-alice-reader"),
    ("ALICE", &[], VM_READ, M, S1, NOW, "allow a-alice-reader"),
    ("mixed-case-id", &[], VM_READ, M, "/subscriptions/s2/resourceGroups/x", NOW, "allow a-mixed-case"),
    // --- notActions
    ("carol", &[], VM_START, M, VM1, NOW, "allow a-carol-vmop"),
    ("carol", &[], VM_READ, M, VM1, NOW, "allow a-carol-vmop"),
    ("carol", &[], VM_DELETE, M, VM1, NOW, "deny -"),
    ("carol", &[], VM_WRITE, M, VM1, NOW, "deny -"),
    ("olivia", &["g-ops"], VM_WRITE, M, VM1, NOW, "allow a-ops-contrib via g-ops"),
    ("olivia", &["g-ops"], "Strata.Authorization/roleAssignments/write", M, S1, NOW, "deny -"),
    ("olivia", &["g-ops"], "Strata.Authorization/roleAssignments/delete", M, S1, NOW, "deny -"),
    ("olivia", &["g-ops"], "Strata.Identity/users/delete", M, S1, NOW, "deny -"),
    ("olivia", &["g-ops"], "Strata.Authorization/roleAssignments/read", M, S1, NOW, "allow a-ops-contrib via g-ops"),
    // --- uaa: reads everything, writes authorization only
    ("uaa", &[], "Strata.Authorization/roleAssignments/write", M, RG1, NOW, "allow a-uaa"),
    ("uaa", &[], VM_WRITE, M, RG1, NOW, "deny -"),
    // --- group membership and reason preference (direct first, then nearest scope)
    ("olivia", &[], VM_WRITE, M, VM1, NOW, "deny -"),
    ("olivia", &["g-ops"], VM_READ, M, VM1, NOW, "allow a-ops-reader-rg via g-ops"),
    ("olivia", &["g-other", "g-ops"], VM_READ, M, S1, NOW, "allow a-ops-contrib via g-ops"),
    ("alice", &["g-ops"], VM_READ, M, VM1, NOW, "allow a-alice-reader"),
    ("erin", &[], VM_READ, M, VM1, NOW, "allow a-erin-reader"),
    ("erin", &[], VM_READ, M, S1, NOW, "allow a-erin-owner"),
    ("erin", &[], VM_WRITE, M, VM1, NOW, "allow a-erin-owner"),
    ("erin", &["g-ops"], VM_WRITE, M, VM1, NOW, "allow a-erin-owner"),
    // --- data actions vs management actions
    ("erin", &[], KEY_DECRYPT, D, KV, NOW, "deny -"),
    ("alice", &[], KEY_READ, D, KV, NOW, "deny -"),
    ("alice", &[], KEY_READ, M, KV, NOW, "allow a-alice-reader"),
    ("dave", &[], KEY_ENCRYPT, D, KV, NOW, "allow a-dave-crypto"),
    ("dave", &[], KEY_READ, D, KV, NOW, "allow a-dave-crypto"),
    ("dave", &[], KEY_SIGN, D, OTHER_KV, NOW, "deny -"),
    ("dave", &[], KEY_READ, M, KV, NOW, "deny -"),
    ("dave", &[], KEY_CREATE, D, KV, NOW, "deny d-dave-decrypt"),
    ("dave", &[], KEY_DECRYPT, D, KV, NOW, "deny d-dave-decrypt"),
    ("dave", &[], KEY_DELETE, D, KV, NOW, "deny d-dave-decrypt"),
    ("dave", &[], KEY_DELETE, M, KV, NOW, "deny -"),
    ("kvadmin", &[], KEY_CREATE, D, KV, NOW, "allow a-kvadmin"),
    ("kvadmin", &[], "Strata.KeyVault/vaults/write", M, KV, NOW, "allow a-kvadmin"),
    ("kvadmin", &[], VM_READ, M, VM1, NOW, "deny -"),
    // --- deny beats owner; EVERYONE
    ("erin", &[], VM_DELETE, M, LOCKED_VM, NOW, "deny d-no-delete"),
    ("erin", &[], VM_DELETE, M, LOCKED, NOW, "deny d-no-delete"),
    ("erin", &[], VM_WRITE, M, LOCKED_VM, NOW, "allow a-erin-owner"),
    ("erin", &[], VM_DELETE, M, "/subscriptions/s1/resourceGroups/locked2", NOW, "allow a-erin-owner"),
    ("erin", &[], VM_DELETE, M, S1, NOW, "allow a-erin-owner"),
    ("nobody", &[], VM_DELETE, M, LOCKED_VM, NOW, "deny d-no-delete"),
    ("nobody", &[], VM_READ, M, S1, NOW, "deny -"),
    ("00000000-0000-0000-0000-000000000000", &[], VM_READ, M, S1, NOW, "deny -"),
    // --- excludePrincipals, direct and via group
    ("breakglass", &[], VM_DELETE, M, LOCKED_VM, NOW, "allow a-breakglass"),
    ("BREAKGLASS", &[], VM_DELETE, M, LOCKED_VM, NOW, "allow a-breakglass"),
    ("erin", &["g-admins"], VM_DELETE, M, LOCKED_VM, NOW, "allow a-erin-owner"),
    ("erin", &["G-ADMINS"], VM_DELETE, M, LOCKED_VM, NOW, "allow a-erin-owner"),
    // --- doNotApplyToChildScopes
    ("bob", &[], VM_WRITE, M, RG1, NOW, "deny d-exact-vm-write"),
    ("bob", &[], VM_WRITE, M, "/subscriptions/S1/resourceGroups/RG1/", NOW, "deny d-exact-vm-write"),
    ("bob", &[], VM_WRITE, M, VM1, NOW, "allow a-bob-owner"),
    ("bob", &[], VM_DELETE, M, RG1, NOW, "allow a-bob-owner"),
    ("erin", &[], VM_WRITE, M, RG1, NOW, "allow a-erin-owner"),
    // --- deny targeted at a group
    ("zed", &["g-contractors"], "Strata.KeyVault/vaults/write", M, "/subscriptions/s3/resourceGroups/x", NOW, "deny d-contractors-kv"),
    ("zed", &["g-contractors"], VM_WRITE, M, "/subscriptions/s3", NOW, "allow a-contractors-owner via g-contractors"),
    ("zed", &[], "Strata.KeyVault/vaults/write", M, "/subscriptions/s3", NOW, "deny -"),
    // --- PIM activations: active while start <= now < end
    ("pim-user", &[], VM_WRITE, M, "/subscriptions/s5/resourceGroups/x", 999, "deny -"),
    ("pim-user", &[], VM_WRITE, M, "/subscriptions/s5/resourceGroups/x", 1_000, "allow pim act-pim"),
    ("pim-user", &[], VM_WRITE, M, "/subscriptions/s5/resourceGroups/x", 2_799, "allow pim act-pim"),
    ("pim-user", &[], VM_WRITE, M, "/subscriptions/s5/resourceGroups/x", 2_800, "deny -"),
    ("pim-user", &[], VM_WRITE, M, "/subscriptions/s6", NOW, "deny -"),
    ("pim-user", &[], KEY_READ, D, "/subscriptions/s5", NOW, "deny -"),
    ("tom", &["g-oncall"], VM_WRITE, M, "/subscriptions/s6", NOW, "allow pim act-grp"),
    ("tom", &["g-oncall"], "Strata.Identity/users/write", M, "/subscriptions/s6", NOW, "deny -"),
    // --- malformed input denies
    ("", &[], VM_READ, M, S1, NOW, "deny -"),
    ("erin", &[], "", M, "/", NOW, "deny -"),
    ("erin", &[], VM_READ, M, "", NOW, "allow a-erin-owner"),
];

#[test]
fn decisions() {
    let engine = engine();
    let mut failures = Vec::new();
    for (i, &(principal, groups, action, data, scope, now, want)) in CASES.iter().enumerate() {
        let got = render(&engine, principal, groups, action, data, scope, now);
        if got != want {
            failures.push(format!(
                "case {i}: {principal} {groups:?} {action} (data={data}) at {scope} @ {now}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn explanations() {
    let engine = engine();
    let check = |principal: &str,
                 groups: &[String],
                 action: &str,
                 data_action: bool,
                 scope: &str,
                 now: i64| {
        engine
            .check(&strata_authz::Request {
                subject: strata_authz::Subject {
                    principal_id: principal,
                    group_ids: groups,
                },
                action,
                data_action,
                scope,
                now,
            })
            .explain()
    };
    let ops = vec!["g-ops".to_string()];
    let lines = [
        check("alice", &[], VM_READ, M, VM1, NOW),
        check("olivia", &ops, VM_WRITE, M, VM1, NOW),
        check("pim-user", &[], VM_WRITE, M, "/subscriptions/s5", NOW),
        check("erin", &[], VM_DELETE, M, LOCKED_VM, NOW),
        check("alice", &[], VM_WRITE, M, VM1, NOW),
    ];
    expect_test::expect![[r#"
        allowed by role assignment 'a-alice-reader' (Reader at /subscriptions/s1)
        allowed by role assignment 'a-ops-contrib' (Contributor at /subscriptions/s1, via group 'g-ops')
        allowed by PIM activation 'act-pim' of eligibility 'elig-act-pim' (Owner at /subscriptions/s5, until 2800)
        denied by deny assignment 'd-no-delete' ('d-no-delete name') at /subscriptions/s1/resourceGroups/locked
        denied: no role assignment grants Strata.Compute/virtualMachines/write at /subscriptions/s1/resourceGroups/rg1/providers/Strata.Compute/virtualMachines/vm1"#]]
    .assert_eq(&lines.join("\n"));
}

#[test]
fn unknown_role_is_a_build_error() {
    let err = Engine::new(
        roles(),
        vec![ra("a1", "p", "no-such-role", "/")],
        vec![],
        vec![],
    )
    .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownRoleInAssignment {
            assignment_id: "a1".into(),
            role_definition_id: "no-such-role".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "role assignment 'a1' names unknown role definition 'no-such-role'; create the role or fix the assignment"
    );
    let err = Engine::new(
        roles(),
        vec![],
        vec![],
        vec![activation("x1", "p", "gone", "/", 0, 10)],
    )
    .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownRoleInActivation { ref activation_id, .. } if activation_id == "x1"),
        "{err:?}"
    );
    let mut dup = roles();
    dup.push(custom_role(
        &builtin::OWNER.to_uppercase(),
        "Owner Copy",
        vec![perm(&["*"], &[])],
    ));
    let err = Engine::new(dup, vec![], vec![], vec![]).unwrap_err();
    assert!(
        matches!(err, BuildError::DuplicateRoleDefinition { .. }),
        "{err:?}"
    );
    // Role ids in assignments resolve case-insensitively.
    assert!(
        Engine::new(
            roles(),
            vec![ra("a1", "p", &builtin::READER.to_uppercase(), "/")],
            vec![],
            vec![]
        )
        .is_ok()
    );
}

#[test]
fn role_lookup() {
    let engine = engine();
    assert_eq!(
        engine.role(builtin::OWNER).map(|r| r.role_name.as_str()),
        Some("Owner")
    );
    assert_eq!(
        engine
            .role(&builtin::OWNER.to_uppercase())
            .map(|r| r.role_name.as_str()),
        Some("Owner")
    );
    assert_eq!(
        engine
            .role_by_name("virtual machine CONTRIBUTOR")
            .map(|r| r.id.as_str()),
        Some(builtin::VIRTUAL_MACHINE_CONTRIBUTOR)
    );
    assert_eq!(
        engine.role_by_name("vm operator").map(|r| r.id.as_str()),
        Some(VM_OPERATOR)
    );
    assert!(engine.role("nope").is_none());
    assert!(engine.role_by_name("nope").is_none());
    assert_eq!(engine.roles().count(), 11);
    let privileged: Vec<&str> = engine
        .roles()
        .filter(|r| r.privileged)
        .map(|r| r.role_name.as_str())
        .collect();
    assert_eq!(
        privileged,
        ["Owner", "Contributor", "User Access Administrator"]
    );
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn assignable_scopes() {
    let mut role = custom_role("r", "R", vec![perm(&["*/read"], &[])]);
    role.assignable_scopes = vec!["/subscriptions/s1".into()];
    assert!(role.is_assignable_at("/subscriptions/S1/resourceGroups/rg"));
    assert!(!role.is_assignable_at("/subscriptions/s2"));
    assert!(!role.is_assignable_at("/"));
}
