//! The evaluation engine: an immutable index over roles, assignments, deny assignments and PIM
//! activations that answers "may this subject do this action at this scope, and why?".
//!
//! Rules (Azure RBAC): deny assignments beat every allow; otherwise the request is allowed when
//! some role assignment or current PIM activation — to the principal or one of its groups — at a
//! covering scope has a role granting the action. Everything else is denied.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::EVERYONE;
use crate::model::{Activation, DenyAssignment, Permission, RoleAssignment, RoleDefinition};
use crate::pattern::Pattern;
use crate::scope::{covers_lower, trim_scope};

/// Who is asking: a principal and the groups it belongs to (already expanded transitively).
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub principal_id: &'a str,
    pub group_ids: &'a [String],
}

/// One authorization question.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub subject: Subject<'a>,
    /// An action such as `Strata.Compute/virtualMachines/read`.
    pub action: &'a str,
    /// True when `action` is a data action (evaluated against `dataActions`).
    pub data_action: bool,
    pub scope: &'a str,
    /// Unix seconds; decides which PIM activations are current.
    pub now: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    Allow,
    Deny,
}

/// What decided the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    RoleAssignment {
        assignment_id: String,
        role_definition_id: String,
        role_name: String,
        scope: String,
        via_group: Option<String>,
    },
    PimActivation {
        activation_id: String,
        eligible_id: String,
        role_name: String,
        scope: String,
        expires_at: i64,
    },
    DenyAssignment {
        deny_assignment_id: String,
        name: String,
        scope: String,
    },
    NoMatchingAssignment,
}

/// The answer to a [`Request`]: an effect plus the reason, for audit logs and error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub effect: Effect,
    pub action: String,
    pub scope: String,
    pub reason: Reason,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// One human sentence, e.g. `allowed by role assignment 'a1' (Reader at /subscriptions/s1)`.
    pub fn explain(&self) -> String {
        let verb = match self.effect {
            Effect::Allow => "allowed",
            Effect::Deny => "denied",
        };
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = match &self.reason {
            Reason::RoleAssignment {
                assignment_id,
                role_name,
                scope,
                via_group,
                ..
            } => {
                let _ = write!(
                    out,
                    "{verb} by role assignment '{assignment_id}' ({role_name} at {scope}"
                );
                if let Some(group) = via_group {
                    let _ = write!(out, ", via group '{group}'");
                }
                write!(out, ")")
            }
            Reason::PimActivation {
                activation_id,
                eligible_id,
                role_name,
                scope,
                expires_at,
            } => write!(
                out,
                "{verb} by PIM activation '{activation_id}' of eligibility '{eligible_id}' \
                 ({role_name} at {scope}, until {expires_at})"
            ),
            Reason::DenyAssignment {
                deny_assignment_id,
                name,
                scope,
            } => write!(
                out,
                "{verb} by deny assignment '{deny_assignment_id}' ('{name}') at {scope}"
            ),
            Reason::NoMatchingAssignment => write!(
                out,
                "{verb}: no role assignment grants {} at {}",
                self.action, self.scope
            ),
        };
        out
    }
}

/// Why an [`Engine`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "role assignment '{assignment_id}' names unknown role definition '{role_definition_id}'; create the role or fix the assignment"
    )]
    UnknownRoleInAssignment {
        assignment_id: String,
        role_definition_id: String,
    },
    #[error(
        "PIM activation '{activation_id}' names unknown role definition '{role_definition_id}'; create the role or fix the activation"
    )]
    UnknownRoleInActivation {
        activation_id: String,
        role_definition_id: String,
    },
    #[error("role definition id '{id}' is used by more than one role; give each role its own id")]
    DuplicateRoleDefinition { id: String },
}

#[derive(Debug)]
struct CompiledPermission {
    actions: Box<[Pattern]>,
    not_actions: Box<[Pattern]>,
    data_actions: Box<[Pattern]>,
    not_data_actions: Box<[Pattern]>,
}

fn compile_all(patterns: &[String]) -> Box<[Pattern]> {
    patterns.iter().map(|p| Pattern::compile(p)).collect()
}

impl CompiledPermission {
    fn new(perm: &Permission) -> Self {
        CompiledPermission {
            actions: compile_all(&perm.actions),
            not_actions: compile_all(&perm.not_actions),
            data_actions: compile_all(&perm.data_actions),
            not_data_actions: compile_all(&perm.not_data_actions),
        }
    }

    fn grants(&self, action: &str, data: bool) -> bool {
        let (allow, except) = if data {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        };
        allow.iter().any(|p| p.matches_lower(action))
            && !except.iter().any(|p| p.matches_lower(action))
    }
}

fn compile_permissions(perms: &[Permission]) -> Box<[CompiledPermission]> {
    perms.iter().map(CompiledPermission::new).collect()
}

/// `action` must already be ASCII-lowercased.
fn any_grants(perms: &[CompiledPermission], action: &str, data: bool) -> bool {
    perms.iter().any(|p| p.grants(action, data))
}

#[derive(Debug)]
struct CompiledRole {
    def: RoleDefinition,
    permissions: Box<[CompiledPermission]>,
}

/// A trimmed, lowercased scope's length and FNV-1a hash. Coverage is decided on these first
/// (against the request's ancestors, hashed in one pass) so a scan touches no scope strings
/// except on a likely match, which is then confirmed byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScopeTag {
    len: usize,
    hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

impl ScopeTag {
    fn of(key: &str) -> ScopeTag {
        ScopeTag {
            len: key.len(),
            hash: key.bytes().fold(FNV_OFFSET, fnv_step),
        }
    }
}

/// The hot half of a role assignment, scanned on every request; the rest lives in
/// [`IndexedAssignment`] at the same index and is read only for the winner.
#[derive(Clone, Copy, Debug)]
struct AssignmentTag {
    scope: ScopeTag,
    role: usize,
}

#[derive(Debug)]
struct IndexedAssignment {
    id: String,
    role: usize,
    scope: String,
    /// Trimmed, lowercased scope.
    key: Box<str>,
}

/// The hot half of a PIM activation (see [`AssignmentTag`]).
#[derive(Clone, Copy, Debug)]
struct ActivationTag {
    scope: ScopeTag,
    role: usize,
    start: i64,
    end: i64,
}

#[derive(Debug)]
struct IndexedActivation {
    id: String,
    eligible_id: String,
    role: usize,
    scope: String,
    key: Box<str>,
    start: i64,
    end: i64,
}

#[derive(Debug)]
struct IndexedDeny {
    tag: ScopeTag,
    id: String,
    name: String,
    scope: String,
    key: Box<str>,
    permissions: Box<[CompiledPermission]>,
    exclude: Box<[Box<str>]>,
    exact_only: bool,
}

impl IndexedDeny {
    fn applies(&self, q: &Query<'_>) -> bool {
        let in_scope = if self.exact_only {
            q.is_exactly(self.tag, &self.key)
        } else {
            q.is_covered_by(self.tag, &self.key)
        };
        in_scope && !self.excludes(q.subject) && any_grants(&self.permissions, q.action, q.data)
    }

    fn excludes(&self, subject: &Subject<'_>) -> bool {
        self.exclude.iter().any(|excluded| {
            excluded.eq_ignore_ascii_case(subject.principal_id)
                || subject
                    .group_ids
                    .iter()
                    .any(|g| excluded.eq_ignore_ascii_case(g))
        })
    }
}

/// How many `/`-separated ancestors of a request scope are fingerprinted; deeper scopes fall
/// back to plain string compares (still exact, only slower). ARM scopes are at most ~12 deep.
const MAX_ANCESTORS: usize = 24;

/// A request with its action and scope lowercased (and the scope trimmed) once, and the
/// fingerprint of every scope that could cover it (each prefix ending before a `/`, and the
/// scope itself; the root `""` covers everything and needs none).
struct Query<'q> {
    subject: &'q Subject<'q>,
    action: &'q str,
    data: bool,
    scope: &'q str,
    now: i64,
    ancestors: [ScopeTag; MAX_ANCESTORS],
    ancestor_count: usize,
    /// More ancestors than [`MAX_ANCESTORS`]: compare strings instead.
    too_deep: bool,
}

impl<'q> Query<'q> {
    fn new(
        subject: &'q Subject<'q>,
        action: &'q str,
        data: bool,
        scope: &'q str,
        now: i64,
    ) -> Self {
        let mut q = Query {
            subject,
            action,
            data,
            scope,
            now,
            ancestors: [ScopeTag { len: 0, hash: 0 }; MAX_ANCESTORS],
            ancestor_count: 0,
            too_deep: false,
        };
        let mut hash = FNV_OFFSET;
        for (len, byte) in scope.bytes().enumerate() {
            if byte == b'/' && len > 0 {
                q.push_ancestor(ScopeTag { len, hash });
            }
            hash = fnv_step(hash, byte);
        }
        if !scope.is_empty() {
            q.push_ancestor(ScopeTag {
                len: scope.len(),
                hash,
            });
        }
        q
    }

    fn push_ancestor(&mut self, tag: ScopeTag) {
        match self.ancestors.get_mut(self.ancestor_count) {
            Some(slot) => {
                *slot = tag;
                self.ancestor_count += 1;
            }
            None => self.too_deep = true,
        }
    }

    /// Does a grant at `key` (whose fingerprint is `tag`) reach this request's scope? `key` is
    /// read only when the fingerprints match, to confirm.
    fn is_covered_by(&self, tag: ScopeTag, key: &str) -> bool {
        if tag.len == 0 {
            return true;
        }
        if !self.too_deep && !self.ancestors[..self.ancestor_count].contains(&tag) {
            return false;
        }
        covers_lower(key, self.scope)
    }

    /// Is the request's scope exactly `key`?
    fn is_exactly(&self, tag: ScopeTag, key: &str) -> bool {
        tag.len == self.scope.len() && key == self.scope
    }
}

/// Everything indexed under one principal (user, group, service principal or [`EVERYONE`]).
/// Assignments and activations are sorted deepest scope first, so the first match is the best;
/// `*_tags[i]` is the compact, scanned half of `assignments[i]` / `activations[i]`.
#[derive(Debug, Default)]
struct PrincipalEntry {
    assignment_tags: Vec<AssignmentTag>,
    assignments: Vec<IndexedAssignment>,
    activation_tags: Vec<ActivationTag>,
    activations: Vec<IndexedActivation>,
    denies: Vec<usize>,
}

/// An immutable, indexed snapshot of authorization data. Cheap to share (`Send + Sync`); rebuild
/// it when the data changes.
#[derive(Debug)]
pub struct Engine {
    roles: Vec<CompiledRole>,
    role_ids: HashMap<Box<str>, usize>,
    role_names: HashMap<String, usize>,
    principals: HashMap<Box<str>, PrincipalEntry>,
    denies: Vec<IndexedDeny>,
    /// Deny assignments naming [`EVERYONE`]; checked for every request.
    everyone_denies: Vec<usize>,
}

fn key(id: &str) -> Box<str> {
    id.to_ascii_lowercase().into_boxed_str()
}

fn scope_key(scope: &str) -> Box<str> {
    key(trim_scope(scope))
}

/// [`EVERYONE`] only has meaning in deny assignments: grants to it are ignored, so a request
/// can never be allowed merely for being somebody.
fn is_everyone(id: &str) -> bool {
    id.eq_ignore_ascii_case(EVERYONE)
}

fn lower(id: &str) -> Cow<'_, str> {
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(id.to_ascii_lowercase())
    } else {
        Cow::Borrowed(id)
    }
}

/// A candidate allow found while scanning.
#[derive(Clone, Copy)]
enum Grant<'e, 'r> {
    Assignment(&'e IndexedAssignment, Option<&'r str>),
    Activation(&'e IndexedActivation),
}

/// The best grant so far, ranked by (direct, scope depth); higher is better.
struct Best<'e, 'r> {
    rank: (bool, usize),
    grant: Grant<'e, 'r>,
}

impl Engine {
    /// Indexes the data. Fails when an assignment or activation names a role id not in `roles`,
    /// or when two roles share an id. Role assignments and activations whose principal is
    /// [`EVERYONE`] are ignored (it is meaningful only in deny assignments).
    pub fn new(
        roles: Vec<RoleDefinition>,
        assignments: Vec<RoleAssignment>,
        denies: Vec<DenyAssignment>,
        activations: Vec<Activation>,
    ) -> Result<Engine, BuildError> {
        let mut role_ids = HashMap::with_capacity(roles.len());
        let mut role_names = HashMap::with_capacity(roles.len());
        let mut compiled = Vec::with_capacity(roles.len());
        for (index, def) in roles.into_iter().enumerate() {
            if role_ids.insert(key(&def.id), index).is_some() {
                return Err(BuildError::DuplicateRoleDefinition { id: def.id });
            }
            role_names
                .entry(def.role_name.to_lowercase())
                .or_insert(index);
            compiled.push(CompiledRole {
                permissions: compile_permissions(&def.permissions),
                def,
            });
        }

        let mut principals: HashMap<Box<str>, PrincipalEntry> = HashMap::new();
        for a in assignments {
            let Some(&role) = role_ids.get(&*lower(&a.role_definition_id)) else {
                return Err(BuildError::UnknownRoleInAssignment {
                    assignment_id: a.id,
                    role_definition_id: a.role_definition_id,
                });
            };
            if is_everyone(&a.principal_id) {
                continue;
            }
            principals
                .entry(key(&a.principal_id))
                .or_default()
                .assignments
                .push(IndexedAssignment {
                    id: a.id,
                    role,
                    key: scope_key(&a.scope),
                    scope: a.scope,
                });
        }
        for a in activations {
            let Some(&role) = role_ids.get(&*lower(&a.role_definition_id)) else {
                return Err(BuildError::UnknownRoleInActivation {
                    activation_id: a.id,
                    role_definition_id: a.role_definition_id,
                });
            };
            if is_everyone(&a.principal_id) {
                continue;
            }
            principals
                .entry(key(&a.principal_id))
                .or_default()
                .activations
                .push(IndexedActivation {
                    id: a.id,
                    eligible_id: a.eligible_id,
                    role,
                    key: scope_key(&a.scope),
                    scope: a.scope,
                    start: a.start,
                    end: a.end,
                });
        }

        let mut indexed_denies = Vec::with_capacity(denies.len());
        let mut everyone_denies = Vec::new();
        for (index, d) in denies.into_iter().enumerate() {
            let mut seen: Vec<Box<str>> = Vec::with_capacity(d.principals.len());
            for principal in &d.principals {
                let k = key(principal);
                if seen.contains(&k) {
                    continue;
                }
                if is_everyone(&k) {
                    everyone_denies.push(index);
                } else {
                    principals.entry(k.clone()).or_default().denies.push(index);
                }
                seen.push(k);
            }
            let deny_key = scope_key(&d.scope);
            indexed_denies.push(IndexedDeny {
                tag: ScopeTag::of(&deny_key),
                key: deny_key,
                permissions: compile_permissions(&d.permissions),
                exclude: d.exclude_principals.iter().map(|p| key(p)).collect(),
                exact_only: d.do_not_apply_to_child_scopes,
                id: d.id,
                name: d.deny_assignment_name,
                scope: d.scope,
            });
        }

        for entry in principals.values_mut() {
            // Stable: equal depths keep input order.
            entry
                .assignments
                .sort_by_key(|a| std::cmp::Reverse(a.key.len()));
            entry
                .activations
                .sort_by_key(|a| std::cmp::Reverse(a.key.len()));
            entry.assignment_tags = entry
                .assignments
                .iter()
                .map(|a| AssignmentTag {
                    scope: ScopeTag::of(&a.key),
                    role: a.role,
                })
                .collect();
            entry.activation_tags = entry
                .activations
                .iter()
                .map(|a| ActivationTag {
                    scope: ScopeTag::of(&a.key),
                    role: a.role,
                    start: a.start,
                    end: a.end,
                })
                .collect();
        }

        Ok(Engine {
            roles: compiled,
            role_ids,
            role_names,
            principals,
            denies: indexed_denies,
            everyone_denies,
        })
    }

    /// The role with this id (case-insensitive).
    pub fn role(&self, id: &str) -> Option<&RoleDefinition> {
        self.role_ids
            .get(&*lower(id))
            .map(|&index| &self.roles[index].def)
    }

    /// The role with this name (case-insensitive); the first one given if names repeat.
    pub fn role_by_name(&self, name: &str) -> Option<&RoleDefinition> {
        self.role_names
            .get(&name.to_lowercase())
            .map(|&index| &self.roles[index].def)
    }

    /// Every role, in the order given to [`Engine::new`].
    pub fn roles(&self) -> impl Iterator<Item = &RoleDefinition> {
        self.roles.iter().map(|r| &r.def)
    }

    fn entry(&self, id: &str) -> Option<&PrincipalEntry> {
        self.principals.get(&*lower(id))
    }

    /// Decides `req`. Never fails: anything not provably allowed is denied.
    pub fn check(&self, req: &Request<'_>) -> Decision {
        if req.action.is_empty() {
            return self.decide(req, Effect::Deny, Reason::NoMatchingAssignment);
        }
        // Everything indexed is lowercase already; lowercase the request once.
        let action = req.action.to_ascii_lowercase();
        let scope = trim_scope(req.scope).to_ascii_lowercase();
        let q = Query::new(&req.subject, &action, req.data_action, &scope, req.now);

        // One pass over the principal's and its groups' entries: any applicable deny ends the
        // evaluation; otherwise remember the best grant (direct before group, then the deepest
        // scope; at equal rank the first found, standing assignments before PIM, wins).
        let direct = self.entry(q.subject.principal_id).map(|e| (None, e));
        let groups = q
            .subject
            .group_ids
            .iter()
            .filter_map(|g| self.entry(g).map(|e| (Some(g.as_str()), e)));
        let mut best: Option<Best<'_, '_>> = None;
        for (via_group, entry) in direct.into_iter().chain(groups) {
            if let Some(deny) = self.applicable_deny(&entry.denies, &q) {
                return self.deny(req, deny);
            }
            self.best_grant(entry, via_group, &q, &mut best);
        }
        if let Some(deny) = self.applicable_deny(&self.everyone_denies, &q) {
            return self.deny(req, deny);
        }

        match best.map(|b| b.grant) {
            None => self.decide(req, Effect::Deny, Reason::NoMatchingAssignment),
            Some(Grant::Assignment(a, via_group)) => {
                let role = &self.roles[a.role].def;
                self.decide(
                    req,
                    Effect::Allow,
                    Reason::RoleAssignment {
                        assignment_id: a.id.clone(),
                        role_definition_id: role.id.clone(),
                        role_name: role.role_name.clone(),
                        scope: a.scope.clone(),
                        via_group: via_group.map(str::to_owned),
                    },
                )
            }
            Some(Grant::Activation(a)) => {
                let role = &self.roles[a.role].def;
                self.decide(
                    req,
                    Effect::Allow,
                    Reason::PimActivation {
                        activation_id: a.id.clone(),
                        eligible_id: a.eligible_id.clone(),
                        role_name: role.role_name.clone(),
                        scope: a.scope.clone(),
                        expires_at: a.end,
                    },
                )
            }
        }
    }

    fn applicable_deny(&self, denies: &[usize], q: &Query<'_>) -> Option<&IndexedDeny> {
        denies
            .iter()
            .map(|&index| &self.denies[index])
            .find(|deny| deny.applies(q))
    }

    fn grants(&self, role: usize, q: &Query<'_>) -> bool {
        any_grants(&self.roles[role].permissions, q.action, q.data)
    }

    /// Updates `best` with this entry's best grant if it ranks strictly higher.
    fn best_grant<'e, 'r>(
        &'e self,
        entry: &'e PrincipalEntry,
        via_group: Option<&'r str>,
        q: &Query<'_>,
        best: &mut Option<Best<'e, 'r>>,
    ) {
        let is_direct = via_group.is_none();
        let beats = |best: &Option<Best<'_, '_>>, rank| best.as_ref().is_none_or(|b| b.rank < rank);
        for (index, tag) in entry.assignment_tags.iter().enumerate() {
            let rank = (is_direct, tag.scope.len);
            if !beats(best, rank) {
                break; // sorted deepest first: nothing later ranks higher
            }
            let Some(a) = entry.assignments.get(index) else {
                break;
            };
            if q.is_covered_by(tag.scope, &a.key) && self.grants(tag.role, q) {
                *best = Some(Best {
                    rank,
                    grant: Grant::Assignment(a, via_group),
                });
                break;
            }
        }
        for (index, tag) in entry.activation_tags.iter().enumerate() {
            let rank = (is_direct, tag.scope.len);
            if !beats(best, rank) {
                break;
            }
            let Some(a) = entry.activations.get(index) else {
                break;
            };
            let current = tag.start <= q.now && q.now < tag.end;
            if current && q.is_covered_by(tag.scope, &a.key) && self.grants(tag.role, q) {
                *best = Some(Best {
                    rank,
                    grant: Grant::Activation(a),
                });
                break;
            }
        }
    }

    fn deny(&self, req: &Request<'_>, deny: &IndexedDeny) -> Decision {
        self.decide(
            req,
            Effect::Deny,
            Reason::DenyAssignment {
                deny_assignment_id: deny.id.clone(),
                name: deny.name.clone(),
                scope: deny.scope.clone(),
            },
        )
    }

    fn decide(&self, req: &Request<'_>, effect: Effect, reason: Reason) -> Decision {
        Decision {
            effect,
            action: req.action.to_owned(),
            scope: req.scope.to_owned(),
            reason,
        }
    }
}
