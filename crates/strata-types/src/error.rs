//! The one error shape of the API: `{"error":{"code":"…","message":"…"}}`, ARM style.

use serde::{Deserialize, Serialize};

/// Wire body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// An API failure: the HTTP status plus the ARM error code and a message that names the bad
/// input and says what to do. Messages never carry secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, "AuthenticationFailed", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "AuthorizationFailed", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFound",
            format!("the resource '{what}' was not found"),
        )
    }
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(412, "PreconditionFailed", message)
    }
    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalServerError",
            "the server hit an internal error; the request id in the response header identifies it in the server log",
        )
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
            },
        }
    }
}
