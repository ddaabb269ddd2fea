//! Flags that say how to reach repositories on S3-compatible object stores, and how to
//! open encrypted ones.

use clap::Args;

use crate::storage::OpenOptions;

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Repository storage: S3 and encryption")]
pub struct StoreArgs {
    /// S3 endpoint URL for S3-compatible stores (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region (also AWS_REGION).
    #[arg(long, value_name = "REGION", global = true)]
    pub s3_region: Option<String>,

    /// Address buckets by path (http://endpoint/bucket) instead of by host name; the default
    /// when an endpoint is given.
    #[arg(long, global = true)]
    pub s3_path_style: bool,

    /// AWS shared credentials file for S3 (`[profile]` with aws_access_key_id and
    /// aws_secret_access_key); instead of the AWS environment (AWS_ACCESS_KEY_ID, ...).
    #[arg(long, value_name = "FILE", global = true)]
    pub s3_credentials_file: Option<std::path::PathBuf>,

    /// Profile to read the S3 credentials from (in --s3-credentials-file, or ~/.aws).
    #[arg(long, value_name = "NAME", global = true)]
    pub s3_profile: Option<String>,

    /// File holding the repository encryption key, at least 32 random bytes: `init` creates
    /// an encrypted repository with it, and every command needs it to open one.
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "MYVAULT_ENCRYPTION_KEY_FILE"
    )]
    pub encryption_key_file: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// Fills what the command line left open from the configuration's [s3] and [encryption]
    /// sections.
    pub fn merge(&mut self, cfg: &super::config::Config) {
        if let Some(e) = &cfg.encryption {
            self.encryption_key_file = self.encryption_key_file.take().or(e.key_file.clone());
        }
        let Some(c) = &cfg.s3 else { return };
        self.s3_endpoint = self.s3_endpoint.take().or_else(|| c.endpoint.clone());
        self.s3_region = self.s3_region.take().or_else(|| c.region.clone());
        self.s3_path_style = self.s3_path_style || c.path_style.unwrap_or(false);
        self.s3_credentials_file = self
            .s3_credentials_file
            .take()
            .or_else(|| c.credentials_file.clone());
        self.s3_profile = self.s3_profile.take().or_else(|| c.profile.clone());
    }

    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_path_style: self.s3_path_style.then_some(true),
            s3_credentials_file: self.s3_credentials_file.clone(),
            s3_profile: self.s3_profile.clone(),
            encryption_key_file: self.encryption_key_file.clone(),
        }
    }
}
