//! PIM: activation validation, and activations granting only inside their window.

use strata_authz::{
    ActivationError, DEFAULT_MAX_ACTIVATION_SECS, EligibleAssignment, Engine, activate, builtin,
};

use crate::support::{render, roles};

fn eligible() -> EligibleAssignment {
    EligibleAssignment {
        id: "e1".into(),
        principal_id: "pat".into(),
        role_definition_id: builtin::CONTRIBUTOR.into(),
        scope: "/subscriptions/s1".into(),
        max_duration_secs: 3_600,
        expires_at: Some(100_000),
    }
}

#[test]
fn valid_activation() {
    let act = activate(
        &eligible(),
        1_800,
        "  deploy hotfix INC-7 ",
        10_000,
        "act-1".into(),
    )
    .unwrap();
    assert_eq!(act.id, "act-1");
    assert_eq!(act.eligible_id, "e1");
    assert_eq!(act.principal_id, "pat");
    assert_eq!(act.role_definition_id, builtin::CONTRIBUTOR);
    assert_eq!(act.scope, "/subscriptions/s1");
    assert_eq!((act.start, act.end), (10_000, 11_800));
    assert_eq!(act.justification, "deploy hotfix INC-7");
    assert!(act.is_active_at(10_000) && act.is_active_at(11_799));
    assert!(!act.is_active_at(9_999) && !act.is_active_at(11_800));
    // Exactly the maximum is allowed.
    assert!(activate(&eligible(), 3_600, "x", 10_000, "a".into()).is_ok());
}

#[test]
fn activation_is_capped_at_eligibility_expiry() {
    let act = activate(&eligible(), 3_600, "late night", 99_000, "a".into()).unwrap();
    assert_eq!(act.end, 100_000);
}

#[test]
fn activation_errors() {
    let e = eligible();
    let cases: Vec<(Result<_, ActivationError>, &str)> = vec![
        (
            activate(&e, 60, "", 0, "a".into()),
            "the justification is empty; say why the role is needed",
        ),
        (
            activate(&e, 60, " \t\n", 0, "a".into()),
            "the justification is empty; say why the role is needed",
        ),
        (
            activate(&e, 60, &"é".repeat(501), 0, "a".into()),
            "the justification is 501 characters long; shorten it to at most 500",
        ),
        (
            activate(&e, 0, "why", 0, "a".into()),
            "the requested duration is 0 seconds; request a positive duration",
        ),
        (
            activate(&e, 3_601, "why", 0, "a".into()),
            "the requested duration of 3601 seconds exceeds the maximum of 3600 seconds for eligibility 'e1'; request a shorter duration",
        ),
        (
            activate(&e, 60, "why", 100_000, "a".into()),
            "eligibility 'e1' expired at 100000; ask an administrator to renew it",
        ),
        (
            activate(&e, u64::MAX, "why", 0, "a".into()),
            "the requested duration of 18446744073709551615 seconds exceeds the maximum of 3600 seconds for eligibility 'e1'; request a shorter duration",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got.unwrap_err().to_string(), want);
    }
    assert!(activate(&e, 60, &"é".repeat(500), 0, "a".into()).is_ok());
}

#[test]
fn default_max_duration_is_eight_hours() {
    let e: EligibleAssignment =
        serde_json::from_str(r#"{"id":"e","principalId":"p","roleDefinitionId":"r","scope":"/"}"#)
            .unwrap();
    assert_eq!(e.max_duration_secs, DEFAULT_MAX_ACTIVATION_SECS);
    assert_eq!(DEFAULT_MAX_ACTIVATION_SECS, 28_800);
    assert_eq!(e.expires_at, None);
    assert!(activate(&e, 28_800, "why", 0, "a".into()).is_ok());
    assert!(matches!(
        activate(&e, 28_801, "why", 0, "a".into()),
        Err(ActivationError::DurationTooLong { .. })
    ));
    // No expiry: huge `now` does not overflow.
    let act = activate(&e, 28_800, "why", i64::MAX - 1, "a".into()).unwrap();
    assert_eq!(act.end, i64::MAX);
}

#[test]
fn eligibility_alone_grants_nothing_activation_grants_in_window() {
    let w = "Strata.Compute/virtualMachines/write";
    let scope = "/subscriptions/s1/resourceGroups/rg";
    let none = Engine::new(roles(), vec![], vec![], vec![]).unwrap();
    assert_eq!(render(&none, "pat", &[], w, false, scope, 10_000), "deny -");

    let act = activate(&eligible(), 600, "fix", 10_000, "act-9".into()).unwrap();
    let engine = Engine::new(roles(), vec![], vec![], vec![act]).unwrap();
    assert_eq!(
        render(&engine, "pat", &[], w, false, scope, 9_999),
        "deny -"
    );
    assert_eq!(
        render(&engine, "pat", &[], w, false, scope, 10_000),
        "allow pim act-9"
    );
    assert_eq!(
        render(&engine, "pat", &[], w, false, scope, 10_599),
        "allow pim act-9"
    );
    assert_eq!(
        render(&engine, "pat", &[], w, false, scope, 10_600),
        "deny -"
    );
    assert_eq!(
        render(&engine, "pat", &[], w, false, "/subscriptions/s2", 10_100),
        "deny -"
    );
    assert_eq!(
        render(&engine, "other", &[], w, false, scope, 10_100),
        "deny -"
    );
    // Contributor's notActions still apply to an activated Contributor.
    assert_eq!(
        render(
            &engine,
            "pat",
            &[],
            "Strata.Authorization/roleAssignments/write",
            false,
            scope,
            10_100
        ),
        "deny -"
    );
}
