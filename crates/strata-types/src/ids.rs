//! Typed identifiers. A `PrincipalId` can never be passed where a `SubscriptionId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an already-validated string.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// A fresh random (v4 UUID) identifier.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A user, group or service principal (its object id, a UUID).
    PrincipalId
);
string_id!(
    /// The one tenant a Strata deployment serves.
    TenantId
);
string_id!(
    /// A subscription: the unit of billing-free isolation and the usual RBAC scope.
    SubscriptionId
);
string_id!(
    /// Correlates a request across logs, audit entries and the response header.
    RequestId
);

/// What kind of principal a token or assignment refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PrincipalKind {
    User,
    Group,
    ServicePrincipal,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
            PrincipalKind::ServicePrincipal => "servicePrincipal",
        }
    }
}
