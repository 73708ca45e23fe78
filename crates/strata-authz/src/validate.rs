//! Validation of tenant-supplied role definitions and scope strings, before they are stored.

use crate::model::RoleDefinition;

/// Longest accepted action pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;
/// Longest accepted scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 2048;

/// Why a role definition (or scope) was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the role name is empty; give the role a name")]
    EmptyRoleName,
    #[error(
        "the role has no permissions; add a permission with at least one action or data action"
    )]
    NoPermissions,
    #[error(
        "permission {index} has no actions and no data actions; add at least one or remove the permission"
    )]
    EmptyPermission { index: usize },
    #[error(
        "invalid {field} pattern '{pattern}' in permission {index}: {problem}; use printable ASCII without spaces, at most {MAX_PATTERN_LEN} characters, e.g. 'Strata.Compute/virtualMachines/read'"
    )]
    InvalidPattern {
        index: usize,
        field: &'static str,
        pattern: String,
        problem: &'static str,
    },
    #[error("the role has no assignable scopes; add at least one, such as '/subscriptions/{{id}}'")]
    NoAssignableScopes,
    #[error(
        "invalid scope '{scope}': {problem}; use '/', '/subscriptions/{{id}}', '/subscriptions/{{id}}/resourceGroups/{{name}}' or a resource id"
    )]
    InvalidScope {
        scope: String,
        problem: &'static str,
    },
}

/// Checks a role definition is well-formed: a non-empty name, at least one permission, every
/// permission granting at least one action or data action, every pattern well-formed, and at
/// least one assignable scope, each well-formed.
pub fn validate_role_definition(def: &RoleDefinition) -> Result<(), ValidationError> {
    if def.role_name.trim().is_empty() {
        return Err(ValidationError::EmptyRoleName);
    }
    if def.permissions.is_empty() {
        return Err(ValidationError::NoPermissions);
    }
    for (index, perm) in def.permissions.iter().enumerate() {
        if perm.actions.is_empty() && perm.data_actions.is_empty() {
            return Err(ValidationError::EmptyPermission { index });
        }
        let lists = [
            ("actions", &perm.actions),
            ("notActions", &perm.not_actions),
            ("dataActions", &perm.data_actions),
            ("notDataActions", &perm.not_data_actions),
        ];
        for (field, patterns) in lists {
            for pattern in patterns {
                if let Some(problem) = pattern_problem(pattern) {
                    return Err(ValidationError::InvalidPattern {
                        index,
                        field,
                        pattern: pattern.clone(),
                        problem,
                    });
                }
            }
        }
    }
    if def.assignable_scopes.is_empty() {
        return Err(ValidationError::NoAssignableScopes);
    }
    def.assignable_scopes
        .iter()
        .try_for_each(|scope| validate_scope(scope))
}

fn pattern_problem(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        Some("it is empty")
    } else if pattern.len() > MAX_PATTERN_LEN {
        Some("it is too long")
    } else if !pattern.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it contains a space, control or non-ASCII character")
    } else {
        None
    }
}

/// Checks `scope` is `/`, a subscription, a resource group, or a resource id (at tenant,
/// subscription or resource-group level). A single trailing `/` is tolerated.
pub fn validate_scope(scope: &str) -> Result<(), ValidationError> {
    scope_problem(scope).map_or(Ok(()), |problem| {
        Err(ValidationError::InvalidScope {
            scope: scope.to_owned(),
            problem,
        })
    })
}

fn scope_problem(scope: &str) -> Option<&'static str> {
    if scope.len() > MAX_SCOPE_LEN {
        return Some("it is too long");
    }
    let Some(body) = scope.strip_prefix('/') else {
        return Some("it must start with '/'");
    };
    if body.is_empty() {
        return None;
    }
    let body = body.strip_suffix('/').unwrap_or(body);
    let segments: Vec<&str> = body.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Some("it has an empty segment");
    }
    if !segments
        .iter()
        .all(|s| s.bytes().all(|b| b.is_ascii_graphic() && b != b'*'))
    {
        return Some("it contains a space, '*', control or non-ASCII character");
    }
    let mut rest = segments.as_slice();
    if let [first, tail @ ..] = rest
        && first.eq_ignore_ascii_case("subscriptions")
    {
        let [_subscription, tail @ ..] = tail else {
            return Some("the subscription id is missing");
        };
        rest = tail;
        if let [first, tail @ ..] = rest
            && first.eq_ignore_ascii_case("resourceGroups")
        {
            let [_group, tail @ ..] = tail else {
                return Some("the resource group name is missing");
            };
            rest = tail;
        }
    }
    match rest {
        [] => None,
        [providers, tail @ ..] if providers.eq_ignore_ascii_case("providers") => match tail {
            [] => Some("the provider namespace is missing"),
            [_namespace, types_and_names @ ..] => {
                if types_and_names.is_empty() {
                    Some("the resource type and name are missing after the provider namespace")
                } else if types_and_names.len() % 2 != 0 {
                    Some("a resource type has no name after it")
                } else {
                    None
                }
            }
        },
        _ => Some(
            "it has an unexpected segment; expected 'subscriptions', 'resourceGroups' or 'providers'",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let good = [
            "/",
            "/subscriptions/s1",
            "/subscriptions/s1/",
            "/subscriptions/s1/resourceGroups/rg",
            "/subscriptions/s1/resourceGroups/rg/providers/Strata.Compute/virtualMachines/vm1",
            "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v/subnets/s",
            "/subscriptions/s1/providers/Strata.Security/jitPolicies/p",
            "/providers/Strata.Identity/users/alice",
        ];
        for scope in good {
            assert_eq!(validate_scope(scope), Ok(()), "{scope}");
        }
        let bad = [
            "",
            "subscriptions/s1",
            "/subscriptions",
            "/subscriptions//rg",
            "/subscriptions/s1/resourceGroups",
            "/subscriptions/s1/foo/bar",
            "/providers/Strata.Identity",
            "/providers/Strata.Identity/users",
            "/providers/Strata.Identity/users/a/b",
            "/subscriptions/s 1",
            "/subscriptions/*",
            "//",
        ];
        for scope in bad {
            assert!(validate_scope(scope).is_err(), "{scope}");
        }
    }
}
