//! A dataset root in object storage, opened from a URL, with retries and per-request timeouts.
//!
//! URLs: `file:///abs/dir` or a bare path (the directory must exist), `memory://` (a fresh,
//! empty in-memory store; tests share one through [`DatasetStore::from_store`]), `s3://bucket/prefix`
//! (configured from the standard `AWS_*` environment variables, including `AWS_ENDPOINT_URL` for
//! S3-compatible servers; an `http://` endpoint is allowed without further flags), `gs://bucket/prefix`
//! (`GOOGLE_*`), `az://container/prefix` (`AZURE_*`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ListResult, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::DataError;
use crate::layout::object_url;

/// How requests are made. Durations are written with units (`"30s"`, `"250ms"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Retries after a transient failure (so at most `max_retries + 1` attempts).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles on each further retry.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest backoff.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Limit on one request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// For stores opened with [`DatasetStore::open_durable`]: how long object_store's own
    /// retries may go on through an outage before a request fails for good.
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            retry_timeout: Duration::from_secs(180),
        }
    }
}

impl StoreConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |key, reason: &str| {
            Err(DataError::Config {
                key,
                reason: reason.to_string(),
            })
        };
        if self.max_retries > 100 {
            return bad("max_retries", "at most 100");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be positive");
        }
        if self.initial_backoff > self.max_backoff {
            return bad("initial_backoff", "must not exceed max_backoff");
        }
        Ok(())
    }

    /// Backoff before retry number `retry` (1-based), with jitter in `[d/2, d]`.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// A dataset root in an object store.
#[derive(Debug, Clone)]
pub struct DatasetStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    config: StoreConfig,
    local: Option<std::path::PathBuf>,
}

impl DatasetStore {
    /// Opens `url`, configuring cloud stores from the environment.
    pub fn open(url: &str, config: StoreConfig) -> Result<Self, DataError> {
        Self::open_with_options(url, &[], config)
    }

    /// Like [`DatasetStore::open`], but creates a missing local directory first (for roots that
    /// are written to, such as checkpoints).
    pub fn create(url: &str, config: StoreConfig) -> Result<Self, DataError> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("file", url));
        if scheme == "file" {
            std::fs::create_dir_all(rest).map_err(|e| DataError::BadUrl {
                url: url.to_string(),
                source: object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                },
            })?;
        }
        Self::open(url, config)
    }

    /// Opens a root that is written to and read back as a whole (checkpoints, the coordinator's
    /// durable state): like [`DatasetStore::create`], but requests through [`DatasetStore::inner`]
    /// retry by themselves (object_store's `RetryConfig`: transient errors and connection
    /// failures, with backoff, for up to `retry_timeout`), so a short outage of the store is not
    /// an error.
    pub fn open_durable(url: &str, config: StoreConfig) -> Result<Self, DataError> {
        let (scheme, _) = url.split_once("://").unwrap_or(("file", url));
        if scheme == "file" {
            return Self::create(url, config);
        }
        Self::build(url, &[], config, true)
    }

    /// Opens `url` with extra store options (`("aws_endpoint", "http://…")`, …) applied after the
    /// environment.
    pub fn open_with_options(
        url: &str,
        options: &[(String, String)],
        config: StoreConfig,
    ) -> Result<Self, DataError> {
        Self::build(url, options, config, false)
    }

    /// [`DatasetStore::open_durable`] with extra store options.
    pub fn open_durable_with_options(
        url: &str,
        options: &[(String, String)],
        config: StoreConfig,
    ) -> Result<Self, DataError> {
        Self::build(url, options, config, true)
    }

    fn build(
        url: &str,
        options: &[(String, String)],
        config: StoreConfig,
        store_retries: bool,
    ) -> Result<Self, DataError> {
        config.validate()?;
        let bad = |source| DataError::BadUrl {
            url: url.to_string(),
            source,
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("file", url));
        if !matches!(scheme, "memory" | "file") {
            // TLS of the cloud stores goes through rustls with ring (the process-wide default,
            // installed once; a provider installed before by the program is kept).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let path_part = |rest: &str| rest.split_once('/').map_or("", |(_, p)| p).to_string();
        let client = ClientOptions::new().with_timeout(config.request_timeout);
        // Dataset reads: our own retry loop (with its per-request timeout) wraps every call.
        // Durable roots: object_store retries by itself, so that raw requests retry too.
        let no_retry = if store_retries {
            RetryConfig {
                max_retries: config.max_retries as usize,
                retry_timeout: config.retry_timeout,
                backoff: object_store::BackoffConfig {
                    init_backoff: config.initial_backoff,
                    max_backoff: config.max_backoff,
                    base: 2.0,
                },
            }
        } else {
            RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            }
        };
        let (store, root): (Arc<dyn ObjectStore>, String) = match scheme {
            "memory" => (Arc::new(InMemory::new()), rest.to_string()),
            "file" => {
                let dir = std::path::Path::new(rest);
                let fs = LocalFileSystem::new_with_prefix(dir).map_err(bad)?;
                (Arc::new(fs), String::new())
            }
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(url);
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(bad)?, v);
                }
                let http = b
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .is_some_and(|e| e.starts_with("http://"));
                // Client options hold allow_http too: set them first.
                let b = b
                    .with_client_options(client)
                    .with_allow_http(http)
                    .with_retry(no_retry);
                (Arc::new(b.build().map_err(bad)?), path_part(rest))
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(url);
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(bad)?, v);
                }
                let b = b.with_client_options(client).with_retry(no_retry);
                (Arc::new(b.build().map_err(bad)?), path_part(rest))
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(bad)?, v);
                }
                let b = b.with_client_options(client).with_retry(no_retry);
                (Arc::new(b.build().map_err(bad)?), path_part(rest))
            }
            other => {
                return Err(bad(object_store::Error::NotSupported {
                    source: format!("unknown URL scheme {other:?}").into(),
                }));
            }
        };
        let root = Path::parse(root.trim_matches('/')).map_err(|e| bad(e.into()))?;
        let mut opened = Self::from_store(store, root, url, config);
        if scheme == "file" {
            opened.local = Some(std::path::PathBuf::from(rest));
        }
        Ok(opened)
    }

    /// A dataset at `root` in an existing store (tests, wrapper stores); `url` names it in messages.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        root: Path,
        url: &str,
        config: StoreConfig,
    ) -> Self {
        Self {
            store,
            root,
            url: url.trim_end_matches('/').to_string(),
            config,
            local: None,
        }
    }

    /// The folder of a local-disk store (`file://` or a bare path), for what object_store cannot
    /// see there (staged uploads `name#N` left by an interrupted write).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// The dataset rooted at `name` under this one (a split), in the same store.
    pub fn child(&self, name: &str) -> Self {
        Self {
            store: self.store.clone(),
            root: self.root.clone().join(name),
            url: format!("{}/{name}", self.url),
            config: self.config.clone(),
            local: self.local.as_ref().map(|d| d.join(name)),
        }
    }

    /// The dataset URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The root path inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL of the object at `path`, for messages.
    pub fn object_url(&self, path: &Path) -> String {
        object_url(&self.url, &self.root, path)
    }

    /// The whole object at `path`.
    pub async fn get(&self, path: &Path) -> Result<Bytes, DataError> {
        self.retry(path, || async { self.store.get(path).await?.bytes().await })
            .await
    }

    /// Writes `data` at `path` (atomically: readers see the old or the new object).
    pub async fn put(&self, path: &Path, data: Bytes) -> Result<(), DataError> {
        self.retry(path, || async {
            self.store.put(path, data.clone().into()).await.map(drop)
        })
        .await
    }

    /// Objects and "directories" directly under `path`.
    pub async fn list_dir(&self, path: &Path) -> Result<ListResult, DataError> {
        self.retry(path, || self.store.list_with_delimiter(Some(path)))
            .await
    }

    /// Runs `op` under the per-request timeout, retrying transient failures with backoff.
    async fn retry<T, F, Fut>(&self, path: &Path, op: F) -> Result<T, DataError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout(self.config.request_timeout, op()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Some(e),
                Err(_elapsed) => None,
            };
            let transient = error.as_ref().is_none_or(is_transient);
            if !transient || attempt > self.config.max_retries {
                let url = self.object_url(path);
                return Err(match error {
                    Some(source) => DataError::Store {
                        url,
                        attempts: attempt,
                        source,
                    },
                    None => DataError::Timeout {
                        url,
                        attempts: attempt,
                        timeout_ms: self.config.request_timeout.as_millis() as u64,
                    },
                });
            }
            let delay = self.config.backoff(attempt);
            let reason = error.map_or_else(|| "timeout".to_string(), |e| e.to_string());
            warn!(
                url = %self.object_url(path),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %reason,
                "request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether an error may go away on its own (network, throttling, server errors).
pub(crate) fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        error,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_human_units_and_validates() {
        let c: StoreConfig =
            serde_json::from_str(r#"{"request_timeout": "30s", "initial_backoff": "50ms"}"#)
                .unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.initial_backoff, Duration::from_millis(50));
        assert_eq!(c.max_retries, StoreConfig::default().max_retries);
        c.validate().unwrap();
        assert!(serde_json::from_str::<StoreConfig>(r#"{"retries": 3}"#).is_err());
        let zero = StoreConfig {
            request_timeout: Duration::ZERO,
            ..StoreConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(DataError::Config {
                key: "request_timeout",
                ..
            })
        ));
        let b = StoreConfig::default();
        assert!(b.backoff(1) <= Duration::from_millis(100));
        assert!(b.backoff(1) >= Duration::from_millis(50));
        assert!(b.backoff(30) <= b.max_backoff);
    }

    #[test]
    fn urls() {
        let c = StoreConfig::default;
        let dir = std::env::temp_dir();
        let s = DatasetStore::open(dir.to_str().unwrap(), c()).unwrap();
        assert!(s.root().as_ref().is_empty());
        let s = DatasetStore::open("memory:///a/b/", c()).unwrap();
        assert_eq!(s.root().as_ref(), "a/b");
        assert_eq!(s.url(), "memory:///a/b");
        let opts = [("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string())];
        let s = DatasetStore::open_with_options("s3://bucket/x/y", &opts, c()).unwrap();
        assert_eq!(s.root().as_ref(), "x/y");
        let gs = [("google_bearer_token".to_string(), "t".to_string())];
        let s = DatasetStore::open_with_options("gs://bucket/g/h", &gs, c()).unwrap();
        assert_eq!(s.root().as_ref(), "g/h");
        let az = [
            ("azure_storage_account_name".to_string(), "acct".to_string()),
            ("azure_storage_use_emulator".to_string(), "true".to_string()),
        ];
        let s = DatasetStore::open_with_options("az://container/i", &az, c()).unwrap();
        assert_eq!(s.root().as_ref(), "i");
        assert!(matches!(
            DatasetStore::open_with_options("s3://b/x", &[("no_such_key".into(), "1".into())], c()),
            Err(DataError::BadUrl { .. })
        ));
        assert!(matches!(
            DatasetStore::open("ftp://host/x", c()),
            Err(DataError::BadUrl { .. })
        ));
        assert!(matches!(
            DatasetStore::open("/definitely/not/a/dir/fourm", c()),
            Err(DataError::BadUrl { .. })
        ));
    }
}
