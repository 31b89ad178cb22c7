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

#[cfg(test)]
mod tests {
    use super::*;

    /// The TOML blocks of a Markdown file that contain `[balancer`.
    fn balancer_examples(markdown: &str) -> Vec<String> {
        markdown
            .split("```toml")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .filter(|block| block.contains("[balancer"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_documented_balancer_config_is_a_valid_config() {
        let doc = include_str!("../../../docs/balancer.md");
        let examples = balancer_examples(doc);
        assert!(!examples.is_empty(), "docs/balancer.md shows a config file");
        for example in examples {
            let file: ConfigFile = toml::from_str(&example)
                .unwrap_or_else(|e| panic!("docs/balancer.md example is invalid: {e}\n{example}"));
            let balancer = file.balancer.expect("a [balancer] table");
            balancer.validate().expect("documented values are accepted");
        }
    }
}
