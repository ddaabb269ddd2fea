//! S3 and S3-compatible object stores, through aws-sdk-s3.
//!
//! The [`Storage`] trait is synchronous; this backend owns a small tokio runtime and blocks
//! on it. Credentials come from the credentials file and profile the caller names, else the
//! standard AWS chain (variables, profile files, web identity, container and instance roles),
//! and are looked up once when the store is opened, so their absence is reported as such and
//! not as whatever the chain's last provider (the instance metadata service) said. Region
//! comes from the caller or the AWS environment; an endpoint can be given for S3-compatible
//! stores, which are then
//! addressed path-style unless told otherwise. Creating an object only if it is absent uses
//! a conditional PUT (`If-None-Match: *`).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use super::{ObjectInfo, OpenOptions, Result, Storage, StorageError, validate_key};

mod multipart;

/// Objects larger than this are uploaded in parts (a pack of 16 MiB, in three), several at
/// once; see [`multipart`].
const MULTIPART_THRESHOLD: usize = 2 * multipart::MIN_PART;

/// A TCP connection to a live endpoint takes milliseconds, even across continents.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most that opening a store may take when the endpoint is dead or does not answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(8);
/// The most that finding credentials may take: an instance role answers in milliseconds, and
/// off a cloud host the chain's last provider only waits to fail.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(3);

/// What an operator reads when no credentials are found anywhere.
const NO_CREDENTIALS: &str = "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in a systemd unit: EnvironmentFile=), or name a credentials file and profile (--s3-credentials-file, --s3-profile, or credentials_file and profile in the config's [s3]; in a unit: LoadCredential=)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

/// Parses `s3://bucket[/prefix]`.
pub fn parse_url(url: &str) -> std::result::Result<S3Location, String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or("an S3 repository is s3://bucket/prefix")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!("'{bucket}' is not a valid bucket name"));
    }
    Ok(S3Location {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// The credentials file and profile the caller named, as the only provider; `None` leaves the
/// SDK's default chain.
fn named_credentials(
    opts: &OpenOptions,
) -> std::result::Result<Option<ProfileFileCredentialsProvider>, String> {
    if opts.s3_credentials_file.is_none() && opts.s3_profile.is_none() {
        return Ok(None);
    }
    let mut files = EnvConfigFiles::builder().include_default_config_file(true);
    files = match &opts.s3_credentials_file {
        Some(path) => {
            std::fs::File::open(path).map_err(|e| {
                format!(
                    "cannot read the S3 credentials file {}: {e}",
                    path.display()
                )
            })?;
            files.with_file(EnvConfigFileKind::Credentials, path)
        }
        None => files.include_default_credentials_file(true),
    };
    let mut provider = ProfileFileCredentialsProvider::builder().profile_files(files.build());
    if let Some(name) = &opts.s3_profile {
        provider = provider.profile_name(name);
    }
    Ok(Some(provider.build()))
}

/// Looks the credentials up once, so that none found is said in those words, within
/// [`CREDENTIALS_TIMEOUT`].
fn check_credentials(
    rt: &tokio::runtime::Runtime,
    shared: &aws_config::SdkConfig,
) -> std::result::Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials as _;
    use aws_credential_types::provider::error::CredentialsError;
    let Some(provider) = shared.credentials_provider() else {
        return Err(NO_CREDENTIALS.into());
    };
    let found = rt.block_on(async {
        tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await
    });
    match found {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(CredentialsError::CredentialsNotLoaded(_))) | Err(_) => Err(NO_CREDENTIALS.into()),
        // The instance metadata service is the chain's last resort: when it gives nothing
        // (not a cloud host, no role, a proxy refusing it), no credentials were found.
        Ok(Err(e)) if from_instance_metadata(&e) => Err(NO_CREDENTIALS.into()),
        Ok(Err(e)) => Err(format!(
            "the S3 credentials could not be loaded: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

fn from_instance_metadata(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<aws_config::imds::client::error::ImdsError>()
            .is_some()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

pub struct S3Storage {
    rt: tokio::runtime::Runtime,
    client: Client,
    loc: S3Location,
    name: String,
    multipart_threshold: usize,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Storage({})", self.name)
    }
}

impl S3Storage {
    /// Opens the bucket and checks that it exists and that the credentials are accepted.
    pub fn open(url: &str, opts: &OpenOptions) -> Result<S3Storage> {
        let failed = |detail: String| StorageError::Failed {
            store: url.to_string(),
            detail,
        };
        let loc = parse_url(url).map_err(failed)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the S3 client: {e}")))?;
        let endpoint = opts
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty());
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = opts.s3_region.clone() {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(named) = named_credentials(opts).map_err(failed)? {
            loader = loader.credentials_provider(named);
        }
        // AWS_REGION, AWS_DEFAULT_REGION and profiles are the SDK's own chain; S3-compatible
        // stores often have no region at all, and the SDK needs one to sign.
        let shared = rt.block_on(loader.load());
        check_credentials(&rt, &shared).map_err(failed)?;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        let mut conf = conf
            // A dead endpoint fails within seconds, not minutes; transient errors are
            // retried a few times here and again by the callers that can wait.
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .force_path_style(opts.s3_path_style.unwrap_or(endpoint.is_some()));
        if let Some(e) = &endpoint {
            conf = conf.endpoint_url(e);
        }
        let client = Client::from_conf(conf.build());
        let name = url.to_string();
        let storage = S3Storage {
            rt,
            client,
            loc,
            name,
            multipart_threshold: MULTIPART_THRESHOLD,
        };
        storage.check_bucket()?;
        Ok(storage)
    }

    /// Lowers the size above which uploads go in parts (tests use it on small objects).
    pub fn set_multipart_threshold(&mut self, bytes: usize) {
        self.multipart_threshold = bytes.max(1);
    }

    fn key(&self, key: &str) -> String {
        if self.loc.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.loc.prefix)
        }
    }

    /// Fails within [`OPEN_TIMEOUT`] when the endpoint is dead or hangs, so a command that
    /// cannot reach its repository says so at once instead of after minutes of retries.
    fn check_bucket(&self) -> Result<()> {
        let quick = aws_sdk_s3::config::Builder::new()
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(OPEN_TIMEOUT / 2)
                    .operation_timeout(OPEN_TIMEOUT)
                    .build(),
            );
        let r = self.rt.block_on(
            self.client
                .head_bucket()
                .bucket(&self.loc.bucket)
                .customize()
                .config_override(quick)
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) => match http_status(&e) {
                Some(404) => Err(StorageError::Failed {
                    store: self.name.clone(),
                    detail: format!("bucket {} does not exist", self.loc.bucket),
                }),
                _ => Err(self.error(e, "")),
            },
        }
    }

    /// Maps an SDK error to what the caller can act on. Never includes credentials.
    fn error<E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        e: SdkError<E, HttpResponse>,
        key: &str,
    ) -> StorageError {
        let store = self.name.clone();
        let status = http_status(&e);
        let code = e.code().unwrap_or_default().to_string();
        let message = e.message().unwrap_or_default().to_string();
        match (&e, status, code.as_str()) {
            (_, _, "NoSuchBucket") => StorageError::Failed {
                store,
                detail: format!("bucket {} does not exist", self.loc.bucket),
            },
            (_, Some(404), _) | (_, _, "NoSuchKey") => StorageError::NotFound {
                store,
                key: key.to_string(),
            },
            (_, Some(401 | 403), _)
            | (_, _, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                StorageError::Denied {
                    store,
                    detail: format!(
                        "the S3 credentials were refused ({})",
                        if code.is_empty() {
                            "HTTP 403".to_string()
                        } else {
                            code
                        }
                    ),
                }
            }
            (SdkError::TimeoutError(_), ..)
            | (SdkError::DispatchFailure(_), ..)
            | (SdkError::ResponseError(_), ..) => StorageError::Unavailable {
                store,
                detail: describe(&e),
            },
            (_, Some(s), _) if s >= 500 || s == 429 => StorageError::Unavailable {
                store,
                detail: format!("HTTP {s} {code} {message}"),
            },
            _ => StorageError::Failed {
                store,
                detail: format!("{code} {message} {}", describe(&e))
                    .trim()
                    .to_string(),
            },
        }
    }
}

/// The HTTP status of a failed request, when there was a response.
fn http_status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn describe<E: std::fmt::Debug, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    use std::error::Error as _;
    match e {
        SdkError::TimeoutError(_) => {
            "no answer in time (is the endpoint right and the server up?)".into()
        }
        SdkError::DispatchFailure(d) => {
            let mut msg = "cannot connect".to_string();
            let mut src = d.as_connector_error().and_then(|c| c.source());
            while let Some(s) = src {
                msg = format!("cannot connect: {s}");
                src = s.source();
            }
            msg
        }
        SdkError::ResponseError(_) => "bad response".into(),
        SdkError::ConstructionFailure(_) => "request could not be built".into(),
        _ => "request failed".into(),
    }
}

impl Storage for S3Storage {
    fn is_remote(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(&self.name, key)?;
        if data.len() > self.multipart_threshold {
            return self.put_multipart(key, data);
        }
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.loc.bucket)
                    .key(self.key(key))
                    .body(ByteStream::from(data.to_vec()))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error(e, key))
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        validate_key(&self.name, key)?;
        let r = self.rt.block_on(
            self.client
                .put_object()
                .bucket(&self.loc.bucket)
                .key(self.key(key))
                .if_none_match("*")
                .body(ByteStream::from(data.to_vec()))
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(http_status(&e), Some(412 | 409))
                    || e.code() == Some("PreconditionFailed") =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(e, key)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(&self.name, key)?;
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.loc.bucket)
                .key(self.key(key))
                .send()
                .await
                .map_err(|e| self.error(e, key))?;
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| StorageError::Unavailable {
                    store: self.name.clone(),
                    detail: format!("reading {key}: {e}"),
                })?;
            Ok(body.into_bytes().to_vec())
        })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(key, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// Takes the body in as it comes, so that a connection dropped in the middle leaves what
    /// arrived in `buf` for the retry to continue from.
    fn get_range_into(&self, key: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        validate_key(&self.name, key)?;
        if len == 0 {
            return match self.stat(key)? {
                Some(_) => Ok(()),
                None => Err(StorageError::NotFound {
                    store: self.name.clone(),
                    key: key.into(),
                }),
            };
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.rt.block_on(async {
            let r = self
                .client
                .get_object()
                .bucket(&self.loc.bucket)
                .key(self.key(key))
                .range(range)
                .send()
                .await;
            let mut body = match r {
                Ok(out) => out.body,
                // A range that starts past the end: nothing there, like a file read.
                Err(e) if http_status(&e) == Some(416) => return Ok(()),
                Err(e) => return Err(self.error(e, key)),
            };
            buf.reserve(usize::try_from(len).unwrap_or(0).min(64 << 20));
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| StorageError::Unavailable {
                    store: self.name.clone(),
                    detail: format!("reading {key}: {e}"),
                })?;
                buf.extend_from_slice(&piece);
            }
            Ok(())
        })
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        validate_key(&self.name, key)?;
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.loc.bucket)
                .key(self.key(key))
                .send(),
        ) {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(e, key)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.key(prefix);
        let strip = if self.loc.prefix.is_empty() {
            0
        } else {
            self.loc.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.loc.bucket)
                .prefix(&full);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = self
                .rt
                .block_on(req.send())
                .map_err(|e| self.error(e, prefix))?;
            for obj in page.contents() {
                if let Some(k) = obj.key()
                    && k.len() > strip
                {
                    out.push(ObjectInfo {
                        key: k[strip..].to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(&self.name, key)?;
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.loc.bucket)
                    .key(self.key(key))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error(e, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://my-bucket/a/b/").unwrap(),
            S3Location {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(parse_url("s3://my-bucket").unwrap().prefix, "");
        assert!(parse_url("s3://UPPER/x").is_err());
        assert!(parse_url("s3://ab").is_err());
        assert!(parse_url("/local/path").is_err());
    }
}
