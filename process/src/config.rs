//! Configuration files: TOML, unknown keys refused by the types' `deny_unknown_fields`, every
//! error naming the file or the dotted key at fault.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration problem, naming the file or the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// An out-of-range value of `key`.
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Parses a TOML document; `origin` names it in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads and parses a TOML file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(&text, path)
}

/// Sets `slot` to `value` when one was given (a flag or its environment variable).
pub fn overlay<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        steps: u64,
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = parse_toml::<Sample>("stpes = 3\n", Path::new("job.toml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("job.toml") && text.contains("stpes"),
            "{text}"
        );
        let e = load_toml::<Sample>(Path::new("/nonexistent/fourm.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert_eq!(
            ConfigError::invalid("job.steps", "must be positive").to_string(),
            "invalid `job.steps`: must be positive"
        );
    }

    #[test]
    fn overlay_replaces_only_given_values() {
        let mut v = 3;
        overlay(&mut v, None);
        assert_eq!(v, 3);
        overlay(&mut v, Some(5));
        assert_eq!(v, 5);
    }
}
