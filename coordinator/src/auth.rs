//! The shared job token: every RPC must carry `authorization: Bearer <token>`; compared in
//! constant time.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Minimum token length.
pub const MIN_TOKEN_LEN: usize = 16;

/// A token problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Neither a token file nor `FOURM_JOB_TOKEN`.
    #[error("no job token: set server.token_file or FOURM_JOB_TOKEN")]
    Missing,
    /// The file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Too short to be a secret.
    #[error("the job token must have at least {MIN_TOKEN_LEN} characters")]
    TooShort,
}

/// Loads the token from `file`, else from `env_token` (the `FOURM_JOB_TOKEN` variable).
pub fn load_token(file: Option<&Path>, env_token: Option<String>) -> Result<String, TokenError> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| TokenError::Read {
                path: path.display().to_string(),
                source,
            })?
            .trim()
            .to_string(),
        None => env_token.ok_or(TokenError::Missing)?.trim().to_string(),
    };
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort);
    }
    Ok(token)
}

/// A tonic interceptor that refuses requests without the job token.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Arc<Vec<u8>>,
}

impl TokenCheck {
    /// Checks for `token`.
    pub fn new(token: &str) -> Self {
        Self {
            expected: Arc::new(format!("Bearer {token}").into_bytes()),
        }
    }

    /// Whether the header value is right.
    pub fn accepts(&self, header: &[u8]) -> bool {
        header.ct_eq(&self.expected).into()
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match request.metadata().get(fourm_proto::AUTH_HEADER) {
            Some(value) if self.accepts(value.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong job token")),
            None => Err(Status::unauthenticated(
                "missing job token (authorization: Bearer <token>)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        let check = TokenCheck::new("0123456789abcdef");
        assert!(check.accepts(b"Bearer 0123456789abcdef"));
        assert!(!check.accepts(b"Bearer 0123456789abcdeg"));
        assert!(!check.accepts(b"Bearer 0123456789abcde"));
        assert!(!check.accepts(b"0123456789abcdef"));
        assert!(matches!(
            load_token(None, Some("short".into())),
            Err(TokenError::TooShort)
        ));
        assert!(matches!(load_token(None, None), Err(TokenError::Missing)));
    }
}
