//! Config = TOML file + `CUSTOS_*` environment overrides, validated once at start.
//!
//! An override names a field path in upper case with `__` between levels:
//! `CUSTOS_NODE_ID` sets `node_id`, `CUSTOS_SEALER__PASSPHRASE_FILE` sets
//! `sealer.passphrase_file`. Values that parse as integers or booleans are
//! typed accordingly; everything else is a string.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration problem, naming the file and field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file (with overrides) does not match the schema; the message names the field.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// serde's description, e.g. "missing field `node_id`".
        message: String,
    },
    /// A value is present but unusable.
    #[error("invalid config field `{field}`: {message}")]
    Field {
        /// Dotted field path.
        field: String,
        /// Why.
        message: String,
    },
    /// A development setting is set and this build does not accept them
    /// (see [`refuse_dev_settings`]).
    #[error(
        "config field `{field}` is a development setting and this is a release build: \
         remove it{}",
        also_set(others)
    )]
    DevSetting {
        /// Dotted path of the first such field, e.g. `dev.fault_injection`.
        field: String,
        /// The other development fields set, if any.
        others: Vec<String>,
    },
}

fn also_set(others: &[String]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        format!(" (also set: {})", others.join(", "))
    }
}

/// Whether a daemon build accepts development settings (fault injection,
/// raw-digest signing, public test primes and aux-info fixtures).
///
/// Each daemon decides its own mode from its own build
/// (`cfg!(any(debug_assertions, feature = "dev"))`), since a library cannot
/// see its dependants' features, and passes it to [`refuse_dev_settings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    /// A debug build, or an optimised build with the daemon's `dev` feature
    /// (demo and benchmark clusters): development settings are honoured.
    Dev,
    /// A release build: development settings are refused at start and
    /// their code paths are compiled out.
    Release,
}

impl BuildMode {
    /// `Dev` if `dev`, else `Release`: `BuildMode::from_dev(cfg!(...))`.
    pub const fn from_dev(dev: bool) -> Self {
        if dev { Self::Dev } else { Self::Release }
    }

    /// True for [`BuildMode::Dev`]; usable in constants, so code gated on it
    /// is removed from release builds.
    pub const fn allows_dev(self) -> bool {
        matches!(self, Self::Dev)
    }
}

/// The one check for development settings: `set` lists the dotted paths of
/// the development fields a config sets (to anything but their default). A
/// release build refuses the config, naming the first; a dev build accepts it.
pub fn refuse_dev_settings(set: &[&str], mode: BuildMode) -> Result<(), ConfigError> {
    match (mode, set.split_first()) {
        (BuildMode::Release, Some((first, rest))) => Err(ConfigError::DevSetting {
            field: (*first).to_owned(),
            others: rest.iter().map(|f| (*f).to_owned()).collect(),
        }),
        _ => Ok(()),
    }
}

/// `[metrics]`: where `/healthz` and `/metrics` are served, apart from the
/// API (plain HTTP, no token: bind it to loopback or a management network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Listen address, e.g. `127.0.0.1:7402`.
    pub listen: std::net::SocketAddr,
}

impl MetricsSettings {
    /// On loopback at `port` (the daemons' defaults).
    pub const fn loopback(port: u16) -> Self {
        Self {
            listen: std::net::SocketAddr::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                port,
            ),
        }
    }
}

/// Loads `path`, applies `CUSTOS_*` overrides from `env`, and deserialises.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let mut value: toml::Table =
        toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix("CUSTOS_") else {
            continue;
        };
        // Variables of the tools, not config fields.
        if rest.is_empty() || rest.starts_with("TEST") || rest.starts_with("REGENERATE") {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        set_path(&mut value, &parts, typed(&raw));
    }
    T::deserialize(value).map_err(|e| invalid(e.message().to_owned()))
}

fn typed(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(inner) = entry {
        set_path(inner, rest, value);
    }
}

/// The process environment, for [`load`].
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars()
}

/// Resolves a path relative to the config file's directory.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        node_id: String,
        port: u16,
        inner: Inner,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn env_overrides_and_errors_name_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "node_id = \"a\"\nport = 1\n[inner]\nflag = false\n").unwrap();
        let c: Cfg = load(
            &p,
            vec![
                ("CUSTOS_PORT".into(), "7".into()),
                ("CUSTOS_INNER__FLAG".into(), "true".into()),
            ],
        )
        .unwrap();
        assert_eq!((c.node_id.as_str(), c.port, c.inner.flag), ("a", 7, true));

        std::fs::write(&p, "port = 1\n[inner]\nflag = false\n").unwrap();
        let e = load::<Cfg>(&p, vec![]).unwrap_err().to_string();
        assert!(e.contains("missing field `node_id`"), "{e}");
        std::fs::write(
            &p,
            "node_id = \"a\"\nport = 1\nbogus = 2\n[inner]\nflag = false\n",
        )
        .unwrap();
        let e = load::<Cfg>(&p, vec![]).unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = load::<Cfg>(&dir.path().join("missing.toml"), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn dev_settings_refused_only_in_release_builds() {
        for mode in [BuildMode::Dev, BuildMode::Release] {
            refuse_dev_settings(&[], mode).unwrap();
        }
        refuse_dev_settings(
            &["dev.fault_injection", "dev.allow_raw_digest"],
            BuildMode::Dev,
        )
        .unwrap();

        let e = refuse_dev_settings(&["dev.fault_injection"], BuildMode::Release).unwrap_err();
        assert!(
            matches!(&e, ConfigError::DevSetting { field, .. } if field == "dev.fault_injection")
        );
        assert_eq!(
            e.to_string(),
            "config field `dev.fault_injection` is a development setting and this is a \
             release build: remove it"
        );
        let e = refuse_dev_settings(&["dev.primes_file", "dev.aux_fixture"], BuildMode::Release)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "config field `dev.primes_file` is a development setting and this is a release build"
            ),
            "{e}"
        );
        assert!(e.ends_with("(also set: dev.aux_fixture)"), "{e}");

        assert_eq!(BuildMode::from_dev(true), BuildMode::Dev);
        assert_eq!(BuildMode::from_dev(false), BuildMode::Release);
        assert!(BuildMode::Dev.allows_dev() && !BuildMode::Release.allows_dev());
    }
}
