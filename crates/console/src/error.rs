//! Errors as pages: a status and a sentence saying what went wrong, in the console's frame.

use crate::html::{esc, page, Frame};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Not signed in (or the session ended): go to the sign-in page.
    #[error("please sign in")]
    SignIn,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mailaudit_server::ApiError> for ConsoleError {
    fn from(e: mailaudit_server::ApiError) -> Self {
        use mailaudit_server::ApiError as A;
        match e {
            A::BadRequest(m) => ConsoleError::BadRequest(m),
            A::NotFound(m) => ConsoleError::NotFound(m),
            A::Unavailable(m) => ConsoleError::Unavailable(m),
            other => ConsoleError::Internal(other.to_string()),
        }
    }
}

impl From<mailaudit_pipeline::PipelineError> for ConsoleError {
    fn from(e: mailaudit_pipeline::PipelineError) -> Self {
        mailaudit_server::ApiError::from(e).into()
    }
}

impl From<mailaudit_store::StoreError> for ConsoleError {
    fn from(e: mailaudit_store::StoreError) -> Self {
        mailaudit_server::ApiError::from(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("console: {self}");
        }
        let title = match status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Cannot do that",
            _ => "Something went wrong",
        };
        let body = format!(
            "<p class=\"error\">{}</p><p><a href=\"/console/\">Back to the console</a></p>",
            esc(&self.to_string())
        );
        let text = page(
            &Frame {
                title,
                session: None,
                bypass: &[],
                refresh: None,
            },
            &body,
        );
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            text,
        )
            .into_response()
    }
}
