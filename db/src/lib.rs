//! One database convention for every Custos store: `sqlx::Any` over SQLite
//! (the embedded default) or PostgreSQL (production), with portable SQL.
//!
//! The stores (`custos-ledger`, `custos-events`, `custos-audit`'s SQL store,
//! the coordinator's tables) depend on this crate alone for their database,
//! so they carry no daemon plumbing; the daemons reach it as
//! `custos_service::db`.
//!
//! Rules for SQL written against [`Db`]: `$1, $2, ...` placeholders (SQLite
//! accepts them too), `BIGINT`/`TEXT` columns, bytes as `BLOB` on SQLite and
//! `BYTEA` on PostgreSQL (use [`Backend::blob`] in DDL), booleans as `BIGINT`
//! 0/1, timestamps as `BIGINT` milliseconds since the Unix epoch.

#![deny(missing_docs)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (WAL, `synchronous = FULL`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a connection URL names, if it is one we support.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The column type for raw bytes.
    pub fn blob(self) -> &'static str {
        match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        }
    }

    /// An auto-incrementing 64-bit primary key column definition.
    pub fn serial_pk(self) -> &'static str {
        match self {
            Self::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Self::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }
}

/// A pool plus the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    /// The connection pool.
    pub pool: AnyPool,
    /// The backend behind it.
    pub backend: Backend,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported backend.
    #[error("database url must start with sqlite: or postgres: (got `{0}`)")]
    UnsupportedUrl(String),
    /// The driver refused or the server is unreachable.
    #[error("database {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
}

/// Removes a password from a URL (a database's, a node's JSON-RPC
/// endpoint) so it can be shown: `scheme://user:***@host...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Only the authority holds credentials; an `@` in the path or query does not.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Db {
    /// Opens a pool. SQLite files are created if missing and run with WAL,
    /// `synchronous = FULL` (a commit survives power loss), foreign keys and a
    /// busy timeout, so a committed state change is durable before we act on it.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend =
            Backend::of_url(url).ok_or_else(|| DbError::UnsupportedUrl(redact_url(url)))?;
        let err = |source| DbError::Connect {
            url: redact_url(url),
            source,
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(err)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(err)?;
        Ok(Self { pool, backend })
    }

    /// Runs `;`-separated DDL statements one by one (idempotent DDL expected:
    /// `CREATE TABLE IF NOT EXISTS ...`).
    pub async fn execute_ddl(&self, ddl: &str) -> Result<(), sqlx::Error> {
        for stmt in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Adds a column to a table created by an earlier version, if it lacks
    /// it (schema upgrades are additive: new columns are nullable).
    /// `table`, `column` and `decl` are compile-time names, never input.
    pub async fn add_column_if_missing(
        &self,
        table: &'static str,
        column: &'static str,
        decl: &str,
    ) -> Result<(), sqlx::Error> {
        let present: i64 = match self.backend {
            Backend::Sqlite => {
                sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2")
                    .bind(table)
                    .bind(column)
                    .fetch_one(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                )
                .bind(table)
                .bind(column)
                .fetch_one(&self.pool)
                .await?
            }
        };
        if present == 0 {
            let stmt = format!("ALTER TABLE {table} ADD COLUMN {column} {decl}");
            match sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&self.pool)
                .await
            {
                Ok(_) => {}
                // Two processes upgrading at once: the other one won.
                Err(sqlx::Error::Database(d))
                    if d.message().contains("duplicate column")
                        || d.message().contains("already exists") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether an error is a unique-constraint violation (a lost insert race or a
/// replayed id).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(feature = "testdb")]
pub mod testdb {
    //! Fresh databases for tests: a SQLite file in a temp dir, or a new
    //! PostgreSQL database on the server named by `CUSTOS_TEST_PG_URL`
    //! (default `postgres://postgres@127.0.0.1:5432/test`).

    use super::{Db, DbError};

    /// The admin URL tests create their PostgreSQL databases through.
    pub fn pg_admin_url() -> String {
        std::env::var("CUSTOS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    /// Creates a new, empty PostgreSQL database and returns its URL. Fails
    /// (does not skip) when the server is unreachable: the test command
    /// (`scripts/ensure-services.sh`) starts it.
    pub async fn fresh_pg_url(prefix: &str) -> Result<String, DbError> {
        let admin_url = pg_admin_url();
        let admin = Db::connect(&admin_url, 1).await?;
        let name = format!(
            "{prefix}_{}_{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        )
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
        // `name` is reduced to [a-z0-9_] above.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin.pool)
            .await
            .map_err(|source| DbError::Connect {
                url: super::redact_url(&admin_url),
                source,
            })?;
        admin.pool.close().await;
        let base = match admin_url.rfind('/') {
            Some(i) if i > admin_url.find("://").map_or(0, |s| s + 2) => &admin_url[..i],
            _ => admin_url.as_str(),
        };
        Ok(format!("{base}/{name}"))
    }

    /// A fresh PostgreSQL database, connected.
    pub async fn fresh_pg(prefix: &str) -> Result<Db, DbError> {
        let url = fresh_pg_url(prefix).await?;
        Db::connect(&url, 8).await
    }

    /// A fresh SQLite file `name.db` in `dir`, connected.
    pub async fn fresh_sqlite(dir: &std::path::Path, name: &str) -> Result<Db, DbError> {
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Db::connect(&url, 8).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(
            redact_url("http://custos:regtest-only@127.0.0.1:19443/"),
            "http://custos:***@127.0.0.1:19443/"
        );
        assert_eq!(
            redact_url("http://u:p:q@h:1/x?y@z"),
            "http://u:***@h:1/x?y@z"
        );
        assert_eq!(redact_url("http://h:1/x?y@z"), "http://h:1/x?y@z");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::of_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://h/d"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://h/d"), None);
    }
}
