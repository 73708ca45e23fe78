//! Strata's authorization engine: Azure-RBAC-shaped role definitions, role assignments, deny
//! assignments and PIM (just-in-time) activations, evaluated into explainable decisions.
//!
//! Everything here is pure: no I/O, no clocks. Callers pass `now` in, build an immutable
//! [`Engine`] from a snapshot of the authorization data, and ask it [`Engine::check`] questions.
//! Anything the engine cannot prove is allowed is denied.

pub mod actions;
pub mod builtin;
mod engine;
mod model;
mod pattern;
mod pim;
mod scope;
mod validate;

pub use engine::{BuildError, Decision, Effect, Engine, Reason, Request, Subject};
pub use model::{
    Activation, DEFAULT_MAX_ACTIVATION_SECS, DenyAssignment, EligibleAssignment, Permission,
    RoleAssignment, RoleDefinition, RoleType,
};
pub use pattern::action_matches;
pub use pim::{ActivationError, MAX_JUSTIFICATION_CHARS, activate};
pub use scope::scope_covers;
pub use validate::{
    MAX_PATTERN_LEN, MAX_SCOPE_LEN, ValidationError, validate_role_definition, validate_scope,
};

/// The special principal id that matches every principal in a deny assignment's `principals`.
pub const EVERYONE: &str = "00000000-0000-0000-0000-000000000000";
