//! The directory snapshot: every principal, group membership and authorization object, loaded
//! from the store into memory and turned into an immutable [`strata_authz::Engine`].
//!
//! Rebuilt whenever identity or authorization data changes: synchronously after this process's
//! own writes (so a revocation applies to the very next request) and by a background follower
//! of the change feed for writes made by other replicas.

use crate::docs::{Doc, SpInternal, UserInternal, internal_of};
use crate::kinds::Kind;
use std::collections::HashMap;
use strata_authz::{
    Activation, DenyAssignment, EligibleAssignment, Engine, RoleAssignment, RoleDefinition,
};
use strata_store::Store;
use strata_types::PrincipalKind;

/// What the request path needs to know about a principal.
#[derive(Clone, Debug)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub kind: PrincipalKind,
    pub enabled: bool,
    /// Tokens issued before this Unix time are refused.
    pub valid_after: i64,
    /// Store key of the principal's document.
    pub key: String,
    pub mfa_enrolled: bool,
}

pub struct Directory {
    pub revision: u64,
    pub engine: Engine,
    principals: HashMap<String, Principal>,
    users_by_name: HashMap<String, String>,
    sps_by_app_id: HashMap<String, String>,
    groups_of: HashMap<String, Vec<String>>,
    /// Eligible (PIM) assignments with the scope they were created at.
    pub eligibilities: Vec<EligibleAssignment>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("store")]
    Store(#[from] strata_store::StoreError),
    #[error("authorization data is inconsistent: {0}")]
    Authz(#[from] strata_authz::BuildError),
    #[error("a stored {kind} document is malformed: {key}")]
    Malformed { kind: &'static str, key: String },
}

/// The scope an extension resource applies to: its id minus `/providers/Strata.Authorization/…`.
pub fn extension_scope(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    match lower.rfind("/providers/strata.authorization/") {
        Some(0) | None => "/".to_string(),
        Some(i) => lower[..i].to_string(),
    }
}

fn parse_props<T: for<'de> serde::Deserialize<'de>>(
    doc: &Doc,
    kind: &'static str,
    key: &str,
) -> Result<T, DirectoryError> {
    serde_json::from_value(doc.properties.clone()).map_err(|_| DirectoryError::Malformed {
        kind,
        key: key.to_string(),
    })
}

fn docs(store: &dyn Store, kind: Kind) -> Result<Vec<(String, Doc)>, DirectoryError> {
    store
        .list_type(&kind.type_key())?
        .into_iter()
        .map(|r| {
            let doc =
                serde_json::from_str::<Doc>(&r.body).map_err(|_| DirectoryError::Malformed {
                    kind: kind.type_name(),
                    key: r.key.clone(),
                })?;
            Ok((r.key, doc))
        })
        .collect()
}

impl Directory {
    pub fn load(store: &dyn Store) -> Result<Directory, DirectoryError> {
        let revision = store.revision()?;
        let mut principals = HashMap::new();
        let mut users_by_name = HashMap::new();
        let mut sps_by_app_id = HashMap::new();
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();

        for (key, doc) in docs(store, Kind::User)? {
            let internal: UserInternal = internal_of(&doc);
            let id = doc.prop_str("objectId").unwrap_or_default().to_string();
            users_by_name.insert(doc.name.to_ascii_lowercase(), id.clone());
            principals.insert(
                id.clone(),
                Principal {
                    id,
                    name: doc.name.clone(),
                    kind: PrincipalKind::User,
                    enabled: doc
                        .properties
                        .get("accountEnabled")
                        .and_then(|v| v.as_bool())
                        != Some(false),
                    valid_after: internal.valid_after,
                    key,
                    mfa_enrolled: internal.totp_sealed.is_some(),
                },
            );
        }
        for (key, doc) in docs(store, Kind::ServicePrincipal)? {
            let internal: SpInternal = internal_of(&doc);
            let id = doc.prop_str("objectId").unwrap_or_default().to_string();
            if let Some(app) = doc.prop_str("appId") {
                sps_by_app_id.insert(app.to_ascii_lowercase(), id.clone());
            }
            principals.insert(
                id.clone(),
                Principal {
                    id,
                    name: doc.name.clone(),
                    kind: PrincipalKind::ServicePrincipal,
                    enabled: doc
                        .properties
                        .get("accountEnabled")
                        .and_then(|v| v.as_bool())
                        != Some(false),
                    valid_after: internal.valid_after,
                    key,
                    mfa_enrolled: false,
                },
            );
        }
        for (key, doc) in docs(store, Kind::Group)? {
            let id = doc.prop_str("objectId").unwrap_or_default().to_string();
            if let Some(members) = doc.properties.get("members").and_then(|m| m.as_array()) {
                for m in members.iter().filter_map(|m| m.as_str()) {
                    groups_of.entry(m.to_string()).or_default().push(id.clone());
                }
            }
            principals.insert(
                id.clone(),
                Principal {
                    id,
                    name: doc.name.clone(),
                    kind: PrincipalKind::Group,
                    enabled: true,
                    valid_after: 0,
                    key,
                    mfa_enrolled: false,
                },
            );
        }

        let mut roles = strata_authz::builtin::roles();
        for (key, doc) in docs(store, Kind::RoleDefinition)? {
            let mut def: RoleDefinition = parse_props(&doc, "roleDefinition", &key)?;
            def.id = doc.name.clone();
            roles.push(def);
        }
        let mut assignments = Vec::new();
        for (key, doc) in docs(store, Kind::RoleAssignment)? {
            let p: AssignmentProps = parse_props(&doc, "roleAssignment", &key)?;
            assignments.push(RoleAssignment {
                id: doc.name.clone(),
                principal_id: p.principal_id,
                role_definition_id: p.role_definition_id,
                scope: extension_scope(&doc.id),
            });
        }
        let mut denies = Vec::new();
        for (key, doc) in docs(store, Kind::DenyAssignment)? {
            let mut d: DenyAssignment = parse_props(&doc, "denyAssignment", &key)?;
            d.id = doc.name.clone();
            d.scope = extension_scope(&doc.id);
            denies.push(d);
        }
        let mut eligibilities = Vec::new();
        for (key, doc) in docs(store, Kind::RoleEligibility)? {
            let p: EligibilityProps = parse_props(&doc, "roleEligibilitySchedule", &key)?;
            eligibilities.push(EligibleAssignment {
                id: doc.name.clone(),
                principal_id: p.principal_id,
                role_definition_id: p.role_definition_id,
                scope: extension_scope(&doc.id),
                max_duration_secs: p.max_duration_secs,
                expires_at: p.expires_at,
            });
        }
        let mut activations = Vec::new();
        for (key, doc) in docs(store, Kind::ActivationRequest)? {
            let a: Activation = serde_json::from_value(doc.internal.clone()).map_err(|_| {
                DirectoryError::Malformed {
                    kind: "roleAssignmentScheduleRequest",
                    key: key.clone(),
                }
            })?;
            activations.push(a);
        }
        let engine = Engine::new(roles, assignments, denies, activations)?;
        Ok(Directory {
            revision,
            engine,
            principals,
            users_by_name,
            sps_by_app_id,
            groups_of,
            eligibilities,
        })
    }

    pub fn principal(&self, id: &str) -> Option<&Principal> {
        self.principals.get(id)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&Principal> {
        self.users_by_name
            .get(&name.to_ascii_lowercase())
            .and_then(|id| self.principals.get(id))
    }

    pub fn sp_by_app_id(&self, app_id: &str) -> Option<&Principal> {
        self.sps_by_app_id
            .get(&app_id.to_ascii_lowercase())
            .and_then(|id| self.principals.get(id))
    }

    pub fn groups_of(&self, principal_id: &str) -> &[String] {
        self.groups_of
            .get(principal_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// `properties` of a role assignment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentProps {
    pub principal_id: String,
    pub role_definition_id: String,
    #[serde(default)]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// `properties` of a PIM eligibility.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EligibilityProps {
    pub principal_id: String,
    pub role_definition_id: String,
    pub max_duration_secs: u64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
}
