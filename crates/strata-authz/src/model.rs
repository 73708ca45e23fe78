//! The authorization data model: role definitions, role and deny assignments, PIM eligibility and
//! activations, serialised with Azure's camelCase field names.

use serde::{Deserialize, Serialize};

use crate::scope::scope_covers;

/// Longest PIM activation allowed when an eligibility does not say otherwise: 8 hours.
pub const DEFAULT_MAX_ACTIVATION_SECS: u64 = 8 * 60 * 60;

fn default_max_activation_secs() -> u64 {
    DEFAULT_MAX_ACTIVATION_SECS
}

/// One block of a role's (or deny assignment's) permissions. Management `actions` and
/// `dataActions` are separate planes: one never grants the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub data_actions: Vec<String>,
    #[serde(default)]
    pub not_data_actions: Vec<String>,
}

/// Whether a role ships with Strata or was defined by a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoleType {
    BuiltInRole,
    CustomRole,
}

/// A named set of permissions that can be assigned at scopes within `assignable_scopes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    pub id: String,
    pub role_name: String,
    pub description: String,
    pub role_type: RoleType,
    pub permissions: Vec<Permission>,
    pub assignable_scopes: Vec<String>,
    /// Privileged roles require MFA upstream.
    #[serde(default)]
    pub privileged: bool,
}

impl RoleDefinition {
    /// True when `scope` lies at or below one of the role's assignable scopes.
    pub fn is_assignable_at(&self, scope: &str) -> bool {
        self.assignable_scopes
            .iter()
            .any(|assignable| scope_covers(assignable, scope))
    }
}

/// A standing grant of a role to a principal (user, group or service principal) at a scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    pub id: String,
    pub principal_id: String,
    pub role_definition_id: String,
    pub scope: String,
}

/// Explicitly blocks actions for principals at a scope; beats every allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DenyAssignment {
    pub id: String,
    pub deny_assignment_name: String,
    pub permissions: Vec<Permission>,
    pub scope: String,
    /// Principal or group ids, or [`crate::EVERYONE`].
    pub principals: Vec<String>,
    #[serde(default)]
    pub exclude_principals: Vec<String>,
    #[serde(default)]
    pub do_not_apply_to_child_scopes: bool,
}

/// PIM eligibility: the principal may activate the role at the scope, but holds nothing until it
/// does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EligibleAssignment {
    pub id: String,
    pub principal_id: String,
    pub role_definition_id: String,
    pub scope: String,
    /// Longest activation that may be requested, in seconds.
    #[serde(default = "default_max_activation_secs")]
    pub max_duration_secs: u64,
    /// Unix seconds after which the eligibility can no longer be activated.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// A time-boxed grant produced by [`crate::activate`]; active while `start <= now < end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    pub id: String,
    pub eligible_id: String,
    pub principal_id: String,
    pub role_definition_id: String,
    pub scope: String,
    pub start: i64,
    pub end: i64,
    pub justification: String,
}

impl Activation {
    /// True while the activation grants its role: `start <= now < end`.
    pub fn is_active_at(&self, now: i64) -> bool {
        self.start <= now && now < self.end
    }
}
