//! Flags that say how to reach repositories on S3-compatible object stores.

use clap::Args;

use crate::storage::OpenOptions;

#[derive(Args, Debug, Clone, Default)]
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
}

impl StoreArgs {
    /// Fills what the command line left open from the configuration's [s3] section.
    pub fn merge(&mut self, cfg: Option<&super::config::S3Section>) {
        let Some(c) = cfg else { return };
        self.s3_endpoint = self.s3_endpoint.take().or_else(|| c.endpoint.clone());
        self.s3_region = self.s3_region.take().or_else(|| c.region.clone());
        self.s3_path_style = self.s3_path_style || c.path_style.unwrap_or(false);
    }

    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_path_style: self.s3_path_style.then_some(true),
        }
    }
}
