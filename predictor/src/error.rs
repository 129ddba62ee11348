//! The predictor's one error mapping (docs/architecture.md's table) to gRPC status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The model refused the payload (ModelError with a 4xx from the container).
    #[error("the model rejected the input: {0}")]
    ModelRejected(String),
    /// The model answered, but not with numbers for `row` (of the request's rows).
    #[error("{reason}")]
    ModelOutput { row: usize, reason: String },
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("the endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The endpoint has no variant of the name the call targeted (it changed meanwhile).
    #[error("the endpoint is unavailable: {0}")]
    NoSuchVariant(String),
    #[error("the circuit to the endpoint is open; retry after {0:?}")]
    CircuitOpen(std::time::Duration),
    #[error("deadline exceeded")]
    Deadline,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The status code label used in metrics.
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::ModelRejected(_) | Error::ModelOutput { .. } => Code::FailedPrecondition,
            Error::Throttled(_) => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::NoSuchVariant(_) | Error::CircuitOpen(_) => {
                Code::Unavailable
            }
            Error::Deadline => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                e.to_string(),
                ErrorDetails::with_bad_request_violation(field.clone(), reason.clone()),
            ),
            Error::ModelOutput { row, reason } => Status::with_error_details(
                Code::FailedPrecondition,
                reason.clone(),
                ErrorDetails::with_bad_request_violation(format!("rows[{row}]"), reason.clone()),
            ),
            // Internal causes are logged where they happen; clients get an opaque message.
            Error::Internal(_) => Status::internal("internal error"),
            _ => Status::new(e.code(), e.to_string()),
        }
    }
}
