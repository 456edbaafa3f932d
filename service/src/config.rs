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
}
