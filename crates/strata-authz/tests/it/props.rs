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

/// A small random tenant: a few principals (one of them [`EVERYONE`]), scopes built from two
/// short segments in mixed case with optional trailing slashes, roles from a handful of patterns.
mod world {
    use proptest::prelude::*;
    use strata_authz::{
        Activation, DenyAssignment, EVERYONE, RoleAssignment, action_matches, scope_covers,
    };

    use crate::support::{custom_role, perm};

    pub const PRINCIPALS: [&str; 4] = ["u1", "U2", "g1", EVERYONE];
    pub const ACTIONS: [&str; 4] = ["A/x/read", "a/x/write", "B/y/read", "b/y/delete"];
    const PATTERNS: [&str; 6] = ["*", "a/*", "*/read", "b/y/delete", "A/X/WRITE", "a/z/*"];

    pub fn scope() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(vec!["s", "S", "r", "rg", "Rg"]), 0..4),
            any::<bool>(),
        )
            .prop_map(|(segs, trailing)| {
                let mut s = format!("/{}", segs.join("/"));
                if trailing {
                    s.push('/');
                }
                s
            })
    }

    fn patterns() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(PATTERNS.to_vec()), 0..3)
    }

    fn principal() -> impl Strategy<Value = &'static str> {
        prop::sample::select(PRINCIPALS.to_vec())
    }

    /// Actions, notActions, principals, scope, doNotApplyToChildScopes.
    type Deny = (
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
        String,
        bool,
    );

    #[derive(Clone, Debug)]
    pub struct World {
        pub roles: Vec<(Vec<&'static str>, Vec<&'static str>)>,
        pub assignments: Vec<(&'static str, usize, String)>,
        pub activations: Vec<(&'static str, usize, String, i64, i64)>,
        pub denies: Vec<Deny>,
    }

    pub fn world() -> impl Strategy<Value = World> {
        let roles = prop::collection::vec((patterns(), patterns()), 1..4);
        roles.prop_flat_map(|roles| {
            let n = roles.len();
            (
                Just(roles),
                prop::collection::vec((principal(), 0..n, scope()), 0..8),
                prop::collection::vec((principal(), 0..n, scope(), 0i64..10, 0i64..10), 0..3),
                prop::collection::vec(
                    (
                        patterns(),
                        patterns(),
                        prop::collection::vec(principal(), 1..3),
                        scope(),
                        any::<bool>(),
                    ),
                    0..3,
                ),
            )
                .prop_map(|(roles, assignments, activations, denies)| World {
                    roles,
                    assignments,
                    activations,
                    denies,
                })
        })
    }

    impl World {
        pub fn engine(&self) -> strata_authz::Engine {
            let roles = self
                .roles
                .iter()
                .enumerate()
                .map(|(i, (a, n))| {
                    custom_role(&format!("r{i}"), &format!("R{i}"), vec![perm(a, n)])
                })
                .collect();
            let assignments = self
                .assignments
                .iter()
                .enumerate()
                .map(|(i, (p, r, s))| RoleAssignment {
                    id: format!("a{i}"),
                    principal_id: (*p).into(),
                    role_definition_id: format!("r{r}"),
                    scope: s.clone(),
                })
                .collect();
            let denies = self
                .denies
                .iter()
                .enumerate()
                .map(|(i, (a, n, p, s, exact))| DenyAssignment {
                    id: format!("d{i}"),
                    deny_assignment_name: format!("deny {i}"),
                    permissions: vec![perm(a, n)],
                    scope: s.clone(),
                    principals: p.iter().map(|x| (*x).into()).collect(),
                    // Exclude the first named principal from every other deny: exercises
                    // excludePrincipals without a separate generator.
                    exclude_principals: if i % 2 == 1 {
                        vec![p[0].to_ascii_uppercase()]
                    } else {
                        Vec::new()
                    },
                    do_not_apply_to_child_scopes: *exact,
                })
                .collect();
            let activations = self
                .activations
                .iter()
                .enumerate()
                .map(|(i, (p, r, s, start, len))| Activation {
                    id: format!("act{i}"),
                    eligible_id: format!("e{i}"),
                    principal_id: (*p).into(),
                    role_definition_id: format!("r{r}"),
                    scope: s.clone(),
                    start: *start,
                    end: start + len,
                    justification: "test".into(),
                })
                .collect();
            match strata_authz::Engine::new(roles, assignments, denies, activations) {
                Ok(engine) => engine,
                Err(e) => panic!("world must build: {e}"),
            }
        }

        fn grants(allow: &[&str], except: &[&str], action: &str) -> bool {
            allow.iter().any(|p| action_matches(p, action))
                && !except.iter().any(|p| action_matches(p, action))
        }

        /// Azure's rules, evaluated the slow, obvious way.
        pub fn reference(&self, who: &[&str], action: &str, scope: &str, now: i64) -> bool {
            let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
            let named = |p: &str| is(p, EVERYONE) || who.iter().any(|w| is(w, p));
            let denied = self
                .denies
                .iter()
                .enumerate()
                .any(|(i, (a, n, p, s, exact))| {
                    let excluded = i % 2 == 1 && who.iter().any(|w| is(w, p[0]));
                    let in_scope = if *exact {
                        scope_covers(s, scope) && scope_covers(scope, s)
                    } else {
                        scope_covers(s, scope)
                    };
                    p.iter().any(|p| named(p))
                        && !excluded
                        && in_scope
                        && Self::grants(a, n, action)
                });
            if denied {
                return false;
            }
            let mine = |p: &str| !is(p, EVERYONE) && who.iter().any(|w| is(w, p));
            let role_grants = |r: usize| {
                let (a, n) = &self.roles[r];
                Self::grants(a, n, action)
            };
            self.assignments
                .iter()
                .any(|(p, r, s)| mine(p) && scope_covers(s, scope) && role_grants(*r))
                || self.activations.iter().any(|(p, r, s, start, len)| {
                    mine(p)
                        && *start <= now
                        && now < start + len
                        && scope_covers(s, scope)
                        && role_grants(*r)
                })
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The indexed engine (deepest-first scans, scope fingerprints) decides exactly as the
    /// rules read: any applicable deny wins, else any covering grant whose role allows.
    #[test]
    fn check_agrees_with_reference(
        w in world::world(),
        principal in prop::sample::select(world::PRINCIPALS.to_vec()),
        in_group in any::<bool>(),
        action in prop::sample::select(world::ACTIONS.to_vec()),
        scope in world::scope(),
        now in 0i64..12,
    ) {
        let engine = w.engine();
        let groups: Vec<String> = if in_group { vec!["G1".into()] } else { Vec::new() };
        let decision = engine.check(&Request {
            subject: Subject { principal_id: principal, group_ids: &groups },
            action,
            data_action: false,
            scope: &scope,
            now,
        });
        let mut who = vec![principal];
        if in_group {
            who.push("G1");
        }
        prop_assert_eq!(
            decision.is_allowed(),
            w.reference(&who, action, &scope, now),
            "{}", decision.explain()
        );
    }
}
