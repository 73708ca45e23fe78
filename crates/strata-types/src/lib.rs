//! Shared vocabulary of Strata: typed IDs, ARM-style resource paths, the resource envelope and
//! the error body every API answer uses. No I/O, no policy: just the shapes everyone agrees on.

pub mod error;
pub mod ids;
pub mod path;
pub mod resource;
pub mod time;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use ids::{PrincipalId, PrincipalKind, RequestId, SubscriptionId, TenantId};
pub use path::{ArmPath, PathError, ResourceId, ResourceTypeName, Scope};
pub use resource::{Resource, ResourceBody, SystemData};
