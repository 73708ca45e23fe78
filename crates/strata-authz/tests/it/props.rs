//! Property tests: the glob matcher against a naive reference, scope coverage against a
//! segment-wise prefix model, and `check` never panicking on arbitrary input.

use proptest::prelude::*;
use strata_authz::{Engine, Request, Subject, action_matches, scope_covers};

/// Naive recursive glob: `*` matches any run, other characters match ignoring ASCII case.
fn reference(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| reference(rest, &text[skip..])),
        Some((p, rest)) => {
            text.first().is_some_and(|t| t.eq_ignore_ascii_case(p)) && reference(rest, &text[1..])
        }
    }
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[aAbB]{1,2}", 0..5)
}

fn join(segs: &[String], trailing: bool) -> String {
    let mut s = format!("/{}", segs.join("/"));
    if trailing && !segs.is_empty() {
        s.push('/');
    }
    s
}

proptest! {
    #[test]
    fn action_matches_agrees_with_reference(pattern in "[abAB/*]{0,8}", action in "[abAB/]{0,10}") {
        prop_assert_eq!(action_matches(&pattern, &action), reference(pattern.as_bytes(), action.as_bytes()));
    }

    #[test]
    fn action_matches_on_arbitrary_strings(pattern in "\\PC{0,12}", action in "\\PC{0,12}") {
        prop_assert_eq!(action_matches(&pattern, &action), reference(pattern.as_bytes(), action.as_bytes()));
    }

    #[test]
    fn scope_covers_is_reflexive(scope in "\\PC{0,40}") {
        prop_assert!(scope_covers(&scope, &scope));
        prop_assert!(scope_covers("/", &scope));
    }

    #[test]
    fn scope_covers_is_segment_prefix(
        a in segments(), r in segments(), ta in any::<bool>(), tr in any::<bool>(),
    ) {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        let (la, lr) = (lower(&a), lower(&r));
        let expected = la.len() <= lr.len() && la[..] == lr[..la.len()];
        prop_assert_eq!(scope_covers(&join(&a, ta), &join(&r, tr)), expected);
    }

    #[test]
    fn check_never_panics(
        principal in "\\PC{0,12}",
        groups in prop::collection::vec("\\PC{0,8}", 0..3),
        action in "\\PC{0,40}",
        scope in "\\PC{0,60}",
        data_action in any::<bool>(),
        now in any::<i64>(),
    ) {
        let engine = crate::support::engine();
        for principal in [principal.as_str(), "erin", "dave", "g-ops"] {
            let decision = engine.check(&Request {
                subject: Subject { principal_id: principal, group_ids: &groups },
                action: &action,
                data_action,
                scope: &scope,
                now,
            });
            prop_assert!(!decision.explain().is_empty());
        }
    }

    #[test]
    fn engine_builds_from_arbitrary_patterns(patterns in prop::collection::vec("\\PC{0,10}", 0..4), action in "\\PC{0,10}") {
        let role = crate::support::custom_role("r", "R", vec![crate::support::perm(
            &patterns.iter().map(String::as_str).collect::<Vec<_>>(), &[])]);
        let assignment = crate::support::ra("a", "p", "r", "/");
        let engine = Engine::new(vec![role], vec![assignment], vec![], vec![]).unwrap();
        let decision = engine.check(&Request {
            subject: Subject { principal_id: "p", group_ids: &[] },
            action: &action, data_action: false, scope: "/x", now: 0,
        });
        let expected = !action.is_empty() && patterns.iter().any(|p| reference(p.as_bytes(), action.as_bytes()));
        prop_assert_eq!(decision.is_allowed(), expected);
    }
}
