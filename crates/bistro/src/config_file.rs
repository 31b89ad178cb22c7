//! The optional TOML config file (`--config FILE` or `BISTRO_CONFIG`).
//!
//! Every command-line option can also be set here, under a table named after the
//! command, with the option's long name in snake_case:
//!
//! ```toml
//! [waiter]
//! id = "w2"
//! listen = "127.0.0.1:7002"
//! mode = "stateless"
//! store = "sqlite://bistro.db"
//! ```
//!
//! Precedence, highest first: command-line flag, `BISTRO_*` environment variable,
//! config file, built-in default. Unknown keys are refused, so a typo is an error
//! rather than a silently ignored setting.

use crate::waiter_cmd::WaiterFile;
use anyhow::Context;
use serde::Deserialize;
use std::path::Path;

/// The whole file; every table is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub waiter: WaiterFile,
    /// The balancer's settings, read by `bistro-balancer`'s own config type (see
    /// docs/balancer.md for every key).
    #[serde(default)]
    pub balancer: Option<bistro_balancer::BalancerConfig>,
}

impl ConfigFile {
    /// Reads and parses `path`; `None` gives an empty config.
    pub fn load(path: Option<&Path>) -> anyhow::Result<ConfigFile> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }
}
