//! Authorization decision latency: Strata's RBAC [`Engine`] against the `cedar-policy` crate
//! evaluating an equivalent policy set, side by side in one run over the same requests.
//!
//! Workload (deterministic, seeded): 50 roles (the 10 built-ins plus 40 generated custom roles
//! mixing `*`, `Provider/*/read`, explicit lists, `notActions` and multi-block permissions),
//! 2,000 users in 100 groups, 10,000 role assignments at scope depths 1–4 (tenant root `/`,
//! subscription, resource group, virtual machine), 100 deny assignments (EVERYONE or named
//! principals, some with `excludePrincipals`, some with `doNotApplyToChildScopes`). Requests are
//! management actions from [`strata_authz::actions::ALL`] at a depth-4 (virtual machine) scope,
//! about half aimed at something the principal was granted.
//!
//! Cedar translation: users are `User` entities whose parents are their `Group`s; scopes are
//! `Scope` entities (id = lowercased path) whose parent is the enclosing scope; each role is a
//! template `permit(principal in ?principal, action in [..], resource in ?resource)` whose action
//! list is the role's patterns expanded against the catalog up front (Cedar has no wildcard
//! actions); each role assignment is a link of that template; each deny assignment is a static
//! `forbid` (`resource ==` for `doNotApplyToChildScopes`, `when { principal in [..] }` for named
//! principals, `unless { principal in [..] }` for exclusions). Both engines must agree on every
//! request; the run panics otherwise.
//!
//! Run with `cargo bench -p strata-authz --bench authz`. Each decision is timed on its own with
//! `Instant`; Cedar's requests are built before timing (Strata's timing includes lowercasing the
//! request and building its `Decision`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::Instant;

use cedar_policy as cedar;
use strata_authz::{
    DenyAssignment, EVERYONE, Engine, Permission, Request, RoleAssignment, RoleDefinition,
    RoleType, Subject, action_matches, actions, builtin, validate_role_definition,
};

const SEED: u64 = 0x5354_5241_5441_0001;
const SUBSCRIPTIONS: usize = 20;
const GROUPS_PER_SUBSCRIPTION: usize = 10;
const VMS_PER_GROUP: usize = 10;
const USERS: usize = 2_000;
const GROUPS: usize = 100;
const ROLES: usize = 50;
const ASSIGNMENTS: usize = 10_000;
const DENIES: usize = 100;
const EVERYONE_DENIES: usize = 20;
const SAMPLES: usize = 100_000;
const WARMUP: usize = 10_000;
/// Cedar evaluates every policy for every request (milliseconds each at this size), so it is
/// timed over a prefix of the samples to keep the run to minutes; the engines' agreement is
/// checked over that prefix.
const CEDAR_SAMPLES: usize = 5_000;
const CEDAR_THROUGHPUT_SAMPLES: usize = 1_000;

/// SplitMix64: small, fast, and good enough to shuffle a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

struct Scope {
    /// As a caller would write it, e.g. `/subscriptions/s1/resourceGroups/rg2`.
    path: String,
    /// The Cedar entity id: the path lowercased (`/` for the root).
    key: String,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// Root, subscriptions, resource groups, virtual machines. Returns the scopes and the indices of
/// each level (level 0 is the root alone).
fn build_scopes() -> (Vec<Scope>, [Vec<usize>; 4]) {
    let mut scopes = vec![Scope {
        path: "/".to_owned(),
        key: "/".to_owned(),
        parent: None,
        children: Vec::new(),
    }];
    let mut levels: [Vec<usize>; 4] = [vec![0], Vec::new(), Vec::new(), Vec::new()];
    let add = |scopes: &mut Vec<Scope>, parent: usize, path: String| {
        let index = scopes.len();
        scopes.push(Scope {
            key: path.to_ascii_lowercase(),
            path,
            parent: Some(parent),
            children: Vec::new(),
        });
        scopes[parent].children.push(index);
        index
    };
    for s in 0..SUBSCRIPTIONS {
        let sub = add(&mut scopes, 0, format!("/subscriptions/s{s}"));
        levels[1].push(sub);
        for g in 0..GROUPS_PER_SUBSCRIPTION {
            let path = format!("{}/resourceGroups/rg{g}", scopes[sub].path);
            let rg = add(&mut scopes, sub, path);
            levels[2].push(rg);
            for v in 0..VMS_PER_GROUP {
                let path = format!(
                    "{}/providers/Strata.Compute/virtualMachines/vm{v}",
                    scopes[rg].path
                );
                let vm = add(&mut scopes, rg, path);
                levels[3].push(vm);
            }
        }
    }
    (scopes, levels)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn perm(actions: &[&str], not_actions: &[&str]) -> Permission {
    Permission {
        actions: strings(actions),
        not_actions: strings(not_actions),
        ..Permission::default()
    }
}

const PROVIDERS: &[&str] = &[
    "Strata.Resources",
    "Strata.Identity",
    "Strata.Authorization",
    "Strata.Compute",
    "Strata.Network",
    "Strata.KeyVault",
    "Strata.Security",
    "Strata.Fabric",
    "Strata.Audit",
];

/// The 10 built-in roles plus generated custom roles, 50 in all.
fn build_roles(rng: &mut Rng, catalog: &[&str]) -> Vec<RoleDefinition> {
    let mut roles = builtin::roles();
    let mut i = 0;
    while roles.len() < ROLES {
        let p = PROVIDERS[rng.below(PROVIDERS.len())];
        let q = PROVIDERS[rng.below(PROVIDERS.len())];
        let permissions = match i % 8 {
            0 => vec![perm(&["*"], &[&format!("{p}/*"), "*/delete"])],
            1 => vec![perm(&[&format!("{p}/*/read")], &[])],
            2 => vec![perm(&[&format!("{p}/*")], &[&format!("{p}/*/delete")])],
            3 => vec![perm(&["*/read", &format!("{p}/*/write")], &[])],
            4 => {
                let picked: Vec<&str> = (0..3 + rng.below(6))
                    .map(|_| catalog[rng.below(catalog.len())])
                    .collect();
                vec![perm(&picked, &[])]
            }
            5 => vec![perm(
                &[&format!("{p}/*"), &format!("{q}/*/read")],
                &["*/action"],
            )],
            6 => vec![
                perm(&[&format!("{p}/*/read")], &[]),
                perm(&[&format!("{q}/*")], &[&format!("{q}/*/delete")]),
            ],
            _ => vec![perm(
                &["*/read"],
                &["Strata.Authorization/*", "Strata.Identity/*"],
            )],
        };
        let role = RoleDefinition {
            id: rng.guid(),
            role_name: format!("Custom role {i}"),
            description: String::new(),
            role_type: RoleType::CustomRole,
            permissions,
            assignable_scopes: vec!["/".to_owned()],
            privileged: false,
        };
        validate_role_definition(&role).expect("generated role is valid");
        roles.push(role);
        i += 1;
    }
    roles
}

/// The catalog's management actions granted by `permissions` (any block whose `actions` match
/// and whose `notActions` do not), as catalog indices.
fn expand(permissions: &[Permission], catalog: &[&str]) -> Vec<usize> {
    (0..catalog.len())
        .filter(|&a| {
            permissions.iter().any(|p| {
                p.actions.iter().any(|pat| action_matches(pat, catalog[a]))
                    && !p
                        .not_actions
                        .iter()
                        .any(|pat| action_matches(pat, catalog[a]))
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Who {
    User(usize),
    Group(usize),
}

struct Directory {
    user_ids: Vec<String>,
    group_ids: Vec<String>,
    /// Each user's groups, as ids (what Strata's `Subject` takes).
    memberships: Vec<Vec<String>>,
    member_of: Vec<Vec<usize>>,
}

impl Directory {
    fn id(&self, who: Who) -> &str {
        match who {
            Who::User(u) => &self.user_ids[u],
            Who::Group(g) => &self.group_ids[g],
        }
    }
}

fn build_directory(rng: &mut Rng) -> Directory {
    let user_ids: Vec<String> = (0..USERS).map(|_| rng.guid()).collect();
    let group_ids: Vec<String> = (0..GROUPS).map(|_| rng.guid()).collect();
    let mut member_of = Vec::with_capacity(USERS);
    for _ in 0..USERS {
        let mut groups: Vec<usize> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let g = rng.below(GROUPS);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        member_of.push(groups);
    }
    let memberships = member_of
        .iter()
        .map(|gs: &Vec<usize>| gs.iter().map(|&g| group_ids[g].clone()).collect())
        .collect();
    Directory {
        user_ids,
        group_ids,
        memberships,
        member_of,
    }
}

struct Assignment {
    who: Who,
    role: usize,
    scope: usize,
}

fn build_assignments(rng: &mut Rng, levels: &[Vec<usize>; 4]) -> Vec<Assignment> {
    (0..ASSIGNMENTS)
        .map(|_| {
            let to_group = rng.percent(20);
            let depth = match rng.below(1000) {
                0..5 => 0,
                5..105 => 1,
                105..455 => 2,
                _ => 3,
            };
            // Tenant-root assignments go to users only (a handful of tenant admins/readers).
            let who = if to_group && depth > 0 {
                Who::Group(rng.below(GROUPS))
            } else {
                Who::User(rng.below(USERS))
            };
            let level = &levels[depth];
            Assignment {
                who,
                role: rng.below(ROLES),
                scope: level[rng.below(level.len())],
            }
        })
        .collect()
}

struct Deny {
    /// Empty means EVERYONE.
    principals: Vec<Who>,
    excludes: Vec<Who>,
    exact: bool,
    scope: usize,
    permissions: Vec<Permission>,
}

fn random_who(rng: &mut Rng) -> Who {
    if rng.percent(50) {
        Who::Group(rng.below(GROUPS))
    } else {
        Who::User(rng.below(USERS))
    }
}

fn build_denies(rng: &mut Rng, levels: &[Vec<usize>; 4]) -> Vec<Deny> {
    (0..DENIES)
        .map(|i| {
            let everyone = i < EVERYONE_DENIES;
            let permissions = match rng.below(if everyone { 6 } else { 7 }) {
                0 => vec![perm(&["*/delete"], &[])],
                1 => vec![perm(&["*/write", "*/delete"], &["Strata.Compute/*"])],
                2 => vec![perm(&["Strata.Authorization/*"], &[])],
                3 => vec![perm(&["Strata.Compute/virtualMachines/*"], &["*/read"])],
                4 => vec![perm(&["*"], &["*/read"])],
                5 => vec![perm(&["Strata.KeyVault/*"], &[])],
                _ => vec![perm(&["*"], &[])],
            };
            let principals = if everyone {
                Vec::new()
            } else {
                (0..1 + rng.below(3)).map(|_| random_who(rng)).collect()
            };
            let excludes = if rng.percent(30) {
                (0..1 + rng.below(2)).map(|_| random_who(rng)).collect()
            } else {
                Vec::new()
            };
            let depth = match rng.below(10) {
                0..2 => 1,
                2..6 => 2,
                _ => 3,
            };
            let level = &levels[depth];
            Deny {
                principals,
                excludes,
                exact: rng.percent(20),
                scope: level[rng.below(level.len())],
                permissions,
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Sample {
    user: usize,
    action: usize,
    scope: usize,
}

fn build_samples(
    rng: &mut Rng,
    dir: &Directory,
    scopes: &[Scope],
    vms: &[usize],
    assignments: &[Assignment],
    granted: &[Vec<usize>],
    catalog: &[&str],
) -> Vec<Sample> {
    // Every assignment reaching each user, directly or through a group.
    let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); USERS];
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
    for (i, a) in assignments.iter().enumerate() {
        match a.who {
            Who::User(u) => by_user[u].push(i),
            Who::Group(g) => by_group[g].push(i),
        }
    }
    for (u, groups) in dir.member_of.iter().enumerate() {
        for &g in groups {
            by_user[u].extend_from_slice(&by_group[g]);
        }
    }
    (0..SAMPLES)
        .map(|_| {
            let user = rng.below(USERS);
            let mine = &by_user[user];
            if rng.percent(50) && !mine.is_empty() {
                // Aim at something granted: a VM below one of the user's assignments, an action
                // of its role (a deny assignment may still refuse it).
                let a = &assignments[mine[rng.below(mine.len())]];
                let mut scope = a.scope;
                while !scopes[scope].children.is_empty() {
                    let children = &scopes[scope].children;
                    scope = children[rng.below(children.len())];
                }
                let actions = &granted[a.role];
                if !actions.is_empty() {
                    return Sample {
                        user,
                        action: actions[rng.below(actions.len())],
                        scope,
                    };
                }
            }
            Sample {
                user,
                action: rng.below(catalog.len()),
                scope: vms[rng.below(vms.len())],
            }
        })
        .collect()
}

fn uid(type_name: &str, id: &str) -> cedar::EntityUid {
    cedar::EntityUid::from_type_name_and_id(
        cedar::EntityTypeName::from_str(type_name).unwrap(),
        cedar::EntityId::new(id),
    )
}

fn who_uid(dir: &Directory, who: Who) -> cedar::EntityUid {
    match who {
        Who::User(_) => uid("User", dir.id(who)),
        Who::Group(_) => uid("Group", dir.id(who)),
    }
}

fn cedar_list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn action_list(actions: &[usize], catalog: &[&str]) -> String {
    cedar_list(
        actions
            .iter()
            .map(|&a| format!("Action::\"{}\"", catalog[a])),
    )
}

fn who_list(dir: &Directory, who: &[Who]) -> String {
    cedar_list(who.iter().map(|&w| match w {
        Who::User(_) => format!("User::\"{}\"", dir.id(w)),
        Who::Group(_) => format!("Group::\"{}\"", dir.id(w)),
    }))
}

/// Returns the policy set, the entities, and how many templates, links and forbids it holds.
fn build_cedar(
    dir: &Directory,
    scopes: &[Scope],
    assignments: &[Assignment],
    granted: &[Vec<usize>],
    denies: &[Deny],
    deny_actions: &[Vec<usize>],
    catalog: &[&str],
) -> (cedar::PolicySet, cedar::Entities, [usize; 3]) {
    let mut set = cedar::PolicySet::new();
    let mut templates = 0;
    for (r, actions) in granted.iter().enumerate() {
        // A role granting no management action (data-plane only) can never allow a request here.
        if actions.is_empty() {
            continue;
        }
        let src = format!(
            "permit(principal in ?principal, action in [{}], resource in ?resource);",
            action_list(actions, catalog)
        );
        let id = cedar::PolicyId::new(format!("role{r}"));
        set.add_template(cedar::Template::parse(Some(id), src).unwrap())
            .unwrap();
        templates += 1;
    }
    let mut links = 0;
    for (i, a) in assignments.iter().enumerate() {
        if granted[a.role].is_empty() {
            continue;
        }
        let vals = HashMap::from([
            (cedar::SlotId::principal(), who_uid(dir, a.who)),
            (
                cedar::SlotId::resource(),
                uid("Scope", &scopes[a.scope].key),
            ),
        ]);
        set.link(
            cedar::PolicyId::new(format!("role{}", a.role)),
            cedar::PolicyId::new(format!("assignment{i}")),
            vals,
        )
        .unwrap();
        links += 1;
    }
    let mut forbids = 0;
    for (i, (d, actions)) in denies.iter().zip(deny_actions).enumerate() {
        if actions.is_empty() {
            continue;
        }
        let op = if d.exact { "==" } else { "in" };
        let mut src = format!(
            "forbid(principal, action in [{}], resource {op} Scope::\"{}\")",
            action_list(actions, catalog),
            scopes[d.scope].key
        );
        if !d.principals.is_empty() {
            src += &format!(
                " when {{ principal in [{}] }}",
                who_list(dir, &d.principals)
            );
        }
        if !d.excludes.is_empty() {
            src += &format!(
                " unless {{ principal in [{}] }}",
                who_list(dir, &d.excludes)
            );
        }
        src += ";";
        let id = cedar::PolicyId::new(format!("deny{i}"));
        set.add(cedar::Policy::parse(Some(id), src).unwrap())
            .unwrap();
        forbids += 1;
    }

    let mut entities = Vec::new();
    for (u, groups) in dir.member_of.iter().enumerate() {
        let parents = groups
            .iter()
            .map(|&g| who_uid(dir, Who::Group(g)))
            .collect();
        entities.push(cedar::Entity::new_no_attrs(
            who_uid(dir, Who::User(u)),
            parents,
        ));
    }
    for g in 0..GROUPS {
        entities.push(cedar::Entity::new_no_attrs(
            who_uid(dir, Who::Group(g)),
            HashSet::new(),
        ));
    }
    for s in scopes {
        let parents = s
            .parent
            .map(|p| uid("Scope", &scopes[p].key))
            .into_iter()
            .collect();
        entities.push(cedar::Entity::new_no_attrs(uid("Scope", &s.key), parents));
    }
    for a in catalog {
        entities.push(cedar::Entity::new_no_attrs(
            uid("Action", a),
            HashSet::new(),
        ));
    }
    let entities = cedar::Entities::from_entities(entities, None).unwrap();
    (set, entities, [templates, links, forbids])
}

struct Stats {
    p50: f64,
    p99: f64,
    p999: f64,
    mean: f64,
    per_sec: f64,
}

fn stats(mut nanos: Vec<u64>, per_sec: f64) -> Stats {
    nanos.sort_unstable();
    let at = |p: f64| nanos[((nanos.len() - 1) as f64 * p).round() as usize] as f64;
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        mean: nanos.iter().sum::<u64>() as f64 / nanos.len() as f64,
        per_sec,
    }
}

/// Times each call of `decide` on its own after a warm-up, returning the latencies (ns) and the
/// outcomes.
fn timed(
    samples: &[Sample],
    warmup: usize,
    mut decide: impl FnMut(usize) -> bool,
) -> (Vec<u64>, Vec<bool>) {
    for i in 0..warmup.min(samples.len()) {
        black_box(decide(i));
    }
    let mut nanos = Vec::with_capacity(samples.len());
    let mut outcomes = Vec::with_capacity(samples.len());
    for i in 0..samples.len() {
        let start = Instant::now();
        let allowed = decide(i);
        let elapsed = start.elapsed();
        outcomes.push(black_box(allowed));
        nanos.push(elapsed.as_nanos() as u64);
    }
    (nanos, outcomes)
}

/// Decisions per second over the first `n` samples, one untimed loop.
fn throughput(n: usize, mut decide: impl FnMut(usize) -> bool) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        black_box(decide(i));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn us(ns: f64) -> String {
    format!("{:.3}", ns / 1000.0)
}

fn main() {
    let build_start = Instant::now();
    let mut rng = Rng(SEED);
    let mut catalog: Vec<&str> = actions::ALL
        .iter()
        .filter(|a| !a.data)
        .map(|a| a.name)
        .collect();
    let mut seen = HashSet::new();
    catalog.retain(|a| seen.insert(*a));
    let (scopes, levels) = build_scopes();
    let roles = build_roles(&mut rng, &catalog);
    let dir = build_directory(&mut rng);
    let assignments = build_assignments(&mut rng, &levels);
    let denies = build_denies(&mut rng, &levels);
    let granted: Vec<Vec<usize>> = roles
        .iter()
        .map(|r| expand(&r.permissions, &catalog))
        .collect();
    let deny_actions: Vec<Vec<usize>> = denies
        .iter()
        .map(|d| expand(&d.permissions, &catalog))
        .collect();
    let samples = build_samples(
        &mut rng,
        &dir,
        &scopes,
        &levels[3],
        &assignments,
        &granted,
        &catalog,
    );

    let engine = Engine::new(
        roles.clone(),
        assignments
            .iter()
            .enumerate()
            .map(|(i, a)| RoleAssignment {
                id: format!("ra{i}"),
                principal_id: dir.id(a.who).to_owned(),
                role_definition_id: roles[a.role].id.clone(),
                scope: scopes[a.scope].path.clone(),
            })
            .collect(),
        denies
            .iter()
            .enumerate()
            .map(|(i, d)| DenyAssignment {
                id: format!("da{i}"),
                deny_assignment_name: format!("deny {i}"),
                permissions: d.permissions.clone(),
                scope: scopes[d.scope].path.clone(),
                principals: if d.principals.is_empty() {
                    vec![EVERYONE.to_owned()]
                } else {
                    d.principals.iter().map(|&w| dir.id(w).to_owned()).collect()
                },
                exclude_principals: d.excludes.iter().map(|&w| dir.id(w).to_owned()).collect(),
                do_not_apply_to_child_scopes: d.exact,
            })
            .collect(),
        Vec::new(),
    )
    .unwrap();
    let strata_built = build_start.elapsed();

    let cedar_start = Instant::now();
    let (policies, entities, [templates, links, forbids]) = build_cedar(
        &dir,
        &scopes,
        &assignments,
        &granted,
        &denies,
        &deny_actions,
        &catalog,
    );
    let user_uids: Vec<_> = (0..USERS).map(|u| who_uid(&dir, Who::User(u))).collect();
    let action_uids: Vec<_> = catalog.iter().map(|a| uid("Action", a)).collect();
    let scope_uids: Vec<_> = scopes.iter().map(|s| uid("Scope", &s.key)).collect();
    let requests: Vec<cedar::Request> = samples
        .iter()
        .map(|s| {
            cedar::Request::new(
                user_uids[s.user].clone(),
                action_uids[s.action].clone(),
                scope_uids[s.scope].clone(),
                cedar::Context::empty(),
                None,
            )
            .unwrap()
        })
        .collect();
    let cedar_built = cedar_start.elapsed();

    println!(
        "workload: {} roles, {USERS} users in {GROUPS} groups, {} role assignments, {} deny \
         assignments ({EVERYONE_DENIES} EVERYONE), {} management actions, {} scopes, {} samples",
        roles.len(),
        assignments.len(),
        denies.len(),
        catalog.len(),
        scopes.len(),
        samples.len()
    );
    println!(
        "cedar: {templates} templates, {links} template-linked permits, {forbids} forbids; \
         built in {:.2?} (strata workload + engine {:.2?})",
        cedar_built, strata_built
    );

    let strata_decide = |i: usize| {
        let s = samples[i];
        engine
            .check(&Request {
                subject: Subject {
                    principal_id: &dir.user_ids[s.user],
                    group_ids: &dir.memberships[s.user],
                },
                action: catalog[s.action],
                data_action: false,
                scope: &scopes[s.scope].path,
                now: 1_800_000_000,
            })
            .is_allowed()
    };
    let authorizer = cedar::Authorizer::new();
    let cedar_decide = |i: usize| {
        authorizer
            .is_authorized(&requests[i], &policies, &entities)
            .decision()
            == cedar::Decision::Allow
    };

    let (overhead, _) = timed(&samples, WARMUP, |i| black_box(i) % 2 == 0);
    let overhead = stats(overhead, f64::NAN);
    let (strata_ns, strata_out) = timed(&samples, WARMUP, strata_decide);
    let strata = stats(strata_ns, throughput(samples.len(), strata_decide));
    let cedar_prefix = &samples[..CEDAR_SAMPLES.min(samples.len())];
    let (cedar_ns, cedar_out) = timed(cedar_prefix, 200, cedar_decide);
    let cedar_n = CEDAR_THROUGHPUT_SAMPLES.min(samples.len());
    let cedar = stats(cedar_ns, throughput(cedar_n, cedar_decide));

    let mut disagreements = 0;
    for (i, (a, b)) in strata_out.iter().zip(&cedar_out).enumerate() {
        if a != b {
            disagreements += 1;
            if disagreements <= 5 {
                let s = samples[i];
                eprintln!(
                    "disagreement: user {} action {} scope {}: strata {a}, cedar {b}",
                    dir.user_ids[s.user], catalog[s.action], scopes[s.scope].path
                );
            }
        }
    }
    assert_eq!(disagreements, 0, "the engines disagree");
    let allowed = strata_out.iter().filter(|&&a| a).count();
    let by_deny = samples
        .iter()
        .take(20_000)
        .filter(|s| {
            matches!(
                engine
                    .check(&Request {
                        subject: Subject {
                            principal_id: &dir.user_ids[s.user],
                            group_ids: &dir.memberships[s.user],
                        },
                        action: catalog[s.action],
                        data_action: false,
                        scope: &scopes[s.scope].path,
                        now: 1_800_000_000,
                    })
                    .reason,
                strata_authz::Reason::DenyAssignment { .. }
            )
        })
        .count();
    println!(
        "outcomes: both engines agree on all {} samples both ran; {:.1}% allowed, {:.1}% denied by \
         a deny assignment (first 20,000)",
        cedar_out.len(),
        100.0 * allowed as f64 / samples.len() as f64,
        100.0 * by_deny as f64 / 20_000.0
    );
    println!();
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "engine", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "decisions/s"
    );
    for (name, s) in [
        ("timer overhead", &overhead),
        ("strata", &strata),
        ("cedar-policy", &cedar),
    ] {
        let per_sec = if s.per_sec.is_nan() {
            "—".to_owned()
        } else {
            format!("{:.0}", s.per_sec)
        };
        println!(
            "{name:<16} {:>9} {:>9} {:>9} {:>9} {per_sec:>14}",
            us(s.p50),
            us(s.p99),
            us(s.p999),
            us(s.mean)
        );
    }
    println!(
        "(strata latencies over all {} samples; cedar latencies over the first {}, its decisions/s \
         over the first {cedar_n})",
        samples.len(),
        cedar_prefix.len()
    );
    println!();
    println!(
        "cedar/strata: p50 {:.1}×, p99 {:.1}×, mean {:.1}×",
        cedar.p50 / strata.p50,
        cedar.p99 / strata.p99,
        cedar.mean / strata.mean
    );
    println!(
        "target: ≥ 10× faster than cedar and strata p99 ≤ 2 µs: {}",
        if cedar.p99 / strata.p99 >= 10.0 && cedar.p50 / strata.p50 >= 10.0 && strata.p99 <= 2000.0
        {
            "met"
        } else {
            "MISSED"
        }
    );
}
