//! Opening the coordinator's database with every module's tables. Each
//! module owns its schema and its upgrades (`db`, `derived`,
//! `chain`, `chain::credits`, `withdrawal::store`, `key_lock`); this module, above all of them, is the
//! one place that lists them, so none reaches up into another's tables.

use std::path::Path;

use crate::db::Db;
use crate::error::CoordError;

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("opening the database", e)
}

/// Opens (creating) `dir/coordinator.db` with every table.
pub async fn open(dir: &Path) -> Result<Db, CoordError> {
    let url = format!("sqlite://{}", dir.join("coordinator.db").display());
    connect(&url).await
}

/// Opens the database at `url` (`sqlite://...` or `postgres://...`),
/// creating every module's tables and running their additive upgrades.
pub async fn connect(url: &str) -> Result<Db, CoordError> {
    let db = Db::connect(url).await?;
    let sql = db.sql();
    sql.execute_ddl(&crate::chain::schema(sql.backend))
        .await
        .map_err(db_err)?;
    sql.execute_ddl(&crate::withdrawal::store::schema(sql.backend))
        .await
        .map_err(db_err)?;
    sql.execute_ddl(crate::key_lock::SCHEMA)
        .await
        .map_err(db_err)?;
    sql.execute_ddl(crate::chain::credits::SCHEMA)
        .await
        .map_err(db_err)?;
    sql.execute_ddl(&crate::derived::SCHEMA.replace("BLOB", sql.backend.blob()))
        .await
        .map_err(db_err)?;
    crate::withdrawal::store::upgrade(&sql)
        .await
        .map_err(db_err)?;
    crate::chain::upgrade(&sql).await.map_err(db_err)?;
    Ok(db)
}
