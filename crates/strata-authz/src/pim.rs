//! Privileged Identity Management: turning an eligibility into a time-boxed activation.
//!
//! An [`EligibleAssignment`] grants nothing. [`activate`] checks the request against the
//! eligibility and produces an [`Activation`] that the engine honours while it is current.

use crate::model::{Activation, EligibleAssignment};

/// Longest accepted activation justification, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 500;

/// Why an activation request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error("the justification is empty; say why the role is needed")]
    EmptyJustification,
    #[error(
        "the justification is {len} characters long; shorten it to at most {MAX_JUSTIFICATION_CHARS}"
    )]
    JustificationTooLong { len: usize },
    #[error("the requested duration is 0 seconds; request a positive duration")]
    ZeroDuration,
    #[error(
        "the requested duration of {requested} seconds exceeds the maximum of {max} seconds for eligibility '{eligible_id}'; request a shorter duration"
    )]
    DurationTooLong {
        eligible_id: String,
        requested: u64,
        max: u64,
    },
    #[error(
        "eligibility '{eligible_id}' expired at {expires_at}; ask an administrator to renew it"
    )]
    EligibilityExpired {
        eligible_id: String,
        expires_at: i64,
    },
}

/// Activates `eligible` for `requested_duration_secs` starting at `now` (Unix seconds).
///
/// The activation never outlives the eligibility: if the eligibility expires first, the
/// activation ends when it does.
pub fn activate(
    eligible: &EligibleAssignment,
    requested_duration_secs: u64,
    justification: &str,
    now: i64,
    id: String,
) -> Result<Activation, ActivationError> {
    let justification = justification.trim();
    if justification.is_empty() {
        return Err(ActivationError::EmptyJustification);
    }
    let len = justification.chars().count();
    if len > MAX_JUSTIFICATION_CHARS {
        return Err(ActivationError::JustificationTooLong { len });
    }
    if requested_duration_secs == 0 {
        return Err(ActivationError::ZeroDuration);
    }
    if requested_duration_secs > eligible.max_duration_secs {
        return Err(ActivationError::DurationTooLong {
            eligible_id: eligible.id.clone(),
            requested: requested_duration_secs,
            max: eligible.max_duration_secs,
        });
    }
    if let Some(expires_at) = eligible.expires_at
        && now >= expires_at
    {
        return Err(ActivationError::EligibilityExpired {
            eligible_id: eligible.id.clone(),
            expires_at,
        });
    }
    let duration = i64::try_from(requested_duration_secs).unwrap_or(i64::MAX);
    let mut end = now.saturating_add(duration);
    if let Some(expires_at) = eligible.expires_at {
        end = end.min(expires_at);
    }
    Ok(Activation {
        id,
        eligible_id: eligible.id.clone(),
        principal_id: eligible.principal_id.clone(),
        role_definition_id: eligible.role_definition_id.clone(),
        scope: eligible.scope.clone(),
        start: now,
        end,
        justification: justification.to_owned(),
    })
}
