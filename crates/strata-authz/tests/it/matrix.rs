//! The authorization matrix: every built-in role × every catalogued action, evaluated through
//! the engine (role assigned at a subscription, request at a resource below it). The snapshot
//! lives in `authz-roles.out`; regenerate with `UPDATE_EXPECT=1 cargo test -p strata-authz`.

use std::fmt::Write as _;

use strata_authz::{Engine, Request, RoleAssignment, Subject, actions, builtin};

const COLUMNS: &[(&str, &str)] = &[
    ("Own", "Owner"),
    ("Con", "Contributor"),
    ("Rdr", "Reader"),
    ("UAA", "User Access Administrator"),
    ("VMC", "Virtual Machine Contributor"),
    ("NtC", "Network Contributor"),
    ("KVA", "Key Vault Administrator"),
    ("KVC", "Key Vault Crypto User"),
    ("SeA", "Security Admin"),
    ("SeR", "Security Reader"),
];

#[test]
fn builtin_role_matrix() {
    let roles = builtin::roles();
    assert_eq!(roles.len(), COLUMNS.len());
    let assignments = COLUMNS
        .iter()
        .map(|(short, name)| {
            let role = roles.iter().find(|r| r.role_name == *name).unwrap();
            RoleAssignment {
                id: format!("a-{short}"),
                principal_id: format!("p-{short}"),
                role_definition_id: role.id.clone(),
                scope: "/subscriptions/s1".into(),
            }
        })
        .collect();
    let engine = Engine::new(roles.clone(), assignments, vec![], vec![]).unwrap();
    let scope = "/subscriptions/s1/resourceGroups/rg1/providers/Strata.Compute/virtualMachines/vm1";

    let width = actions::ALL.iter().map(|a| a.name.len()).max().unwrap();
    let mut out = String::new();
    writeln!(
        out,
        "Built-in role x action matrix (role assigned at /subscriptions/s1, checked below it)."
    )
    .unwrap();
    writeln!(out, "Kind: M = management action, D = data action.").unwrap();
    writeln!(out).unwrap();
    for (short, name) in COLUMNS {
        let privileged = roles
            .iter()
            .find(|r| r.role_name == *name)
            .unwrap()
            .privileged;
        writeln!(
            out,
            "  {short}  {name}{}",
            if privileged { " (privileged)" } else { "" }
        )
        .unwrap();
    }
    writeln!(out).unwrap();
    write!(out, "{:width$}  Kind", "Action").unwrap();
    for (short, _) in COLUMNS {
        write!(out, "  {short}").unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "{}", "-".repeat(width + 6 + 5 * COLUMNS.len())).unwrap();
    let mut last_namespace = "";
    for action in actions::ALL {
        let namespace = action.name.split('/').next().unwrap();
        if !last_namespace.is_empty() && namespace != last_namespace {
            writeln!(out).unwrap();
        }
        last_namespace = namespace;
        write!(
            out,
            "{:width$}  {}   ",
            action.name,
            if action.data { "D" } else { "M" }
        )
        .unwrap();
        for (short, _) in COLUMNS {
            let principal = format!("p-{short}");
            let decision = engine.check(&Request {
                subject: Subject {
                    principal_id: &principal,
                    group_ids: &[],
                },
                action: action.name,
                data_action: action.data,
                scope,
                now: 0,
            });
            write!(
                out,
                "  {} ",
                if decision.is_allowed() {
                    " ✔"
                } else {
                    " ✘"
                }
            )
            .unwrap();
        }
        let line_end = out.trim_end().len();
        out.truncate(line_end);
        writeln!(out).unwrap();
    }
    expect_test::expect_file!["authz-roles.out"].assert_eq(&out);
}
