//! Shared fixtures: a small tenant with assignments, deny assignments and a PIM activation, plus
//! a `check` helper that renders decisions as short strings for one-line test cases.

use strata_authz::{
    Activation, DenyAssignment, EVERYONE, Engine, Permission, Reason, Request, RoleAssignment,
    RoleDefinition, RoleType, Subject, builtin,
};

pub const VM_OPERATOR: &str = "custom-vm-operator";

pub fn perm(actions: &[&str], not_actions: &[&str]) -> Permission {
    Permission {
        actions: actions.iter().map(|s| s.to_string()).collect(),
        not_actions: not_actions.iter().map(|s| s.to_string()).collect(),
        ..Permission::default()
    }
}

pub fn data_perm(data_actions: &[&str], not_data_actions: &[&str]) -> Permission {
    Permission {
        data_actions: data_actions.iter().map(|s| s.to_string()).collect(),
        not_data_actions: not_data_actions.iter().map(|s| s.to_string()).collect(),
        ..Permission::default()
    }
}

pub fn custom_role(id: &str, name: &str, permissions: Vec<Permission>) -> RoleDefinition {
    RoleDefinition {
        id: id.into(),
        role_name: name.into(),
        description: String::new(),
        role_type: RoleType::CustomRole,
        permissions,
        assignable_scopes: vec!["/".into()],
        privileged: false,
    }
}

pub fn roles() -> Vec<RoleDefinition> {
    let mut roles = builtin::roles();
    roles.push(custom_role(
        VM_OPERATOR,
        "VM Operator",
        vec![perm(
            &["Strata.Compute/virtualMachines/*"],
            &[
                "Strata.Compute/virtualMachines/delete",
                "Strata.Compute/virtualMachines/write",
            ],
        )],
    ));
    roles
}

pub fn ra(id: &str, principal: &str, role: &str, scope: &str) -> RoleAssignment {
    RoleAssignment {
        id: id.into(),
        principal_id: principal.into(),
        role_definition_id: role.into(),
        scope: scope.into(),
    }
}

pub fn deny(
    id: &str,
    scope: &str,
    permission: Permission,
    principals: &[&str],
    exclude: &[&str],
    exact_only: bool,
) -> DenyAssignment {
    DenyAssignment {
        id: id.into(),
        deny_assignment_name: format!("{id} name"),
        permissions: vec![permission],
        scope: scope.into(),
        principals: principals.iter().map(|s| s.to_string()).collect(),
        exclude_principals: exclude.iter().map(|s| s.to_string()).collect(),
        do_not_apply_to_child_scopes: exact_only,
    }
}

pub fn activation(
    id: &str,
    principal: &str,
    role: &str,
    scope: &str,
    start: i64,
    end: i64,
) -> Activation {
    Activation {
        id: id.into(),
        eligible_id: format!("elig-{id}"),
        principal_id: principal.into(),
        role_definition_id: role.into(),
        scope: scope.into(),
        start,
        end,
        justification: "incident 42".into(),
    }
}

pub const S1: &str = "/subscriptions/s1";
pub const RG1: &str = "/subscriptions/s1/resourceGroups/rg1";
pub const VM1: &str =
    "/subscriptions/s1/resourceGroups/rg1/providers/Strata.Compute/virtualMachines/vm1";
pub const LOCKED: &str = "/subscriptions/s1/resourceGroups/locked";
pub const KV: &str = "/subscriptions/s1/resourceGroups/rg1/providers/Strata.KeyVault/vaults/kv1";

/// The fixture tenant used by the data-driven cases.
pub fn engine() -> Engine {
    let assignments = vec![
        ra("a-alice-reader", "alice", builtin::READER, S1),
        ra("a-bob-owner", "bob", builtin::OWNER, RG1),
        ra("a-ops-contrib", "g-ops", builtin::CONTRIBUTOR, S1),
        ra("a-ops-reader-rg", "g-ops", builtin::READER, RG1),
        ra("a-carol-vmop", "carol", VM_OPERATOR, VM1),
        ra("a-dave-crypto", "dave", builtin::KEY_VAULT_CRYPTO_USER, KV),
        ra("a-erin-owner", "erin", builtin::OWNER, "/"),
        ra("a-erin-reader", "erin", builtin::READER, RG1),
        ra("a-kvadmin", "kvadmin", builtin::KEY_VAULT_ADMINISTRATOR, S1),
        ra("a-uaa", "uaa", builtin::USER_ACCESS_ADMINISTRATOR, S1),
        ra(
            "a-mixed-case",
            "Mixed-Case-ID",
            builtin::READER,
            "/SUBSCRIPTIONS/S2/",
        ),
        ra(
            "a-contractors-owner",
            "g-contractors",
            builtin::OWNER,
            "/subscriptions/s3",
        ),
        ra("a-everyone-owner", EVERYONE, builtin::OWNER, "/"),
        ra("a-breakglass", "breakglass", builtin::OWNER, "/"),
    ];
    let denies = vec![
        deny(
            "d-no-delete",
            LOCKED,
            perm(&["*/delete"], &[]),
            &[EVERYONE],
            &["breakglass", "g-admins"],
            false,
        ),
        deny(
            "d-exact-vm-write",
            RG1,
            perm(&["Strata.Compute/virtualMachines/write"], &[]),
            &["bob"],
            &[],
            true,
        ),
        deny(
            "d-contractors-kv",
            "/subscriptions/s3",
            perm(&["Strata.KeyVault/*"], &[]),
            &["g-contractors"],
            &[],
            false,
        ),
        deny(
            "d-dave-decrypt",
            KV,
            data_perm(
                &["Strata.KeyVault/vaults/keys/*"],
                &[
                    "Strata.KeyVault/vaults/keys/read",
                    "Strata.KeyVault/vaults/keys/encrypt/action",
                ],
            ),
            &["dave"],
            &[],
            false,
        ),
    ];
    let activations = vec![
        activation(
            "act-pim",
            "pim-user",
            builtin::OWNER,
            "/subscriptions/s5",
            1_000,
            2_800,
        ),
        activation(
            "act-grp",
            "g-oncall",
            builtin::CONTRIBUTOR,
            "/subscriptions/s6",
            1_000,
            2_800,
        ),
    ];
    Engine::new(roles(), assignments, denies, activations).unwrap()
}

/// Renders a decision as `allow <id>[ via <group>]`, `allow pim <id>`, `deny <id>` or `deny -`.
pub fn render(
    engine: &Engine,
    principal: &str,
    groups: &[&str],
    action: &str,
    data: bool,
    scope: &str,
    now: i64,
) -> String {
    let group_ids: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    let decision = engine.check(&Request {
        subject: Subject {
            principal_id: principal,
            group_ids: &group_ids,
        },
        action,
        data_action: data,
        scope,
        now,
    });
    let rendered = match &decision.reason {
        Reason::RoleAssignment {
            assignment_id,
            via_group: None,
            ..
        } => format!("allow {assignment_id}"),
        Reason::RoleAssignment {
            assignment_id,
            via_group: Some(g),
            ..
        } => format!("allow {assignment_id} via {g}"),
        Reason::PimActivation { activation_id, .. } => format!("allow pim {activation_id}"),
        Reason::DenyAssignment {
            deny_assignment_id, ..
        } => format!("deny {deny_assignment_id}"),
        Reason::NoMatchingAssignment => "deny -".to_string(),
    };
    assert_eq!(
        decision.is_allowed(),
        rendered.starts_with("allow"),
        "effect/reason mismatch: {decision:?}"
    );
    assert_eq!(decision.action, action);
    assert_eq!(decision.scope, scope);
    rendered
}
