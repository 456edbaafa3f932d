//! The helpers every store relies on behave the same on SQLite and
//! PostgreSQL: additive schema upgrades are idempotent (and tolerate a
//! concurrent upgrader), unique violations are recognised, and a bad URL is
//! refused without showing a password.
#![cfg(feature = "testdb")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use custos_db::testdb::{fresh_pg, fresh_sqlite};
use custos_db::{Backend, Db, DbError, is_unique_violation};

async fn exercise(db: &Db) {
    db.execute_ddl(&format!(
        "CREATE TABLE IF NOT EXISTS t (id {}, name TEXT NOT NULL UNIQUE); \
         CREATE TABLE IF NOT EXISTS t (id {}, name TEXT NOT NULL UNIQUE)",
        db.backend.serial_pk(),
        db.backend.serial_pk()
    ))
    .await
    .unwrap();
    // An upgrade adds the column once; running it again is a no-op.
    db.add_column_if_missing("t", "payload", db.backend.blob())
        .await
        .unwrap();
    db.add_column_if_missing("t", "payload", db.backend.blob())
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (name, payload) VALUES ($1, $2)")
        .bind("a")
        .bind(vec![1u8, 2, 3])
        .execute(&db.pool)
        .await
        .unwrap();
    let dup = sqlx::query("INSERT INTO t (name) VALUES ($1)")
        .bind("a")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(is_unique_violation(&dup), "{dup}");
    let other = sqlx::query("INSERT INTO missing_table (x) VALUES (1)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(!is_unique_violation(&other), "{other}");
    let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM t WHERE name = $1")
        .bind("a")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(payload, [1, 2, 3]);
}

#[tokio::test]
async fn helpers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_sqlite(dir.path(), "helpers").await.unwrap();
    assert_eq!(db.backend, Backend::Sqlite);
    exercise(&db).await;
}

#[tokio::test]
async fn helpers_on_postgres() {
    let db = fresh_pg("custos_db_helpers").await.unwrap();
    assert_eq!(db.backend, Backend::Postgres);
    exercise(&db).await;
}

#[tokio::test]
async fn an_unsupported_url_is_refused_without_the_password() {
    let err = Db::connect("mysql://u:hunter2@h/db", 1).await.unwrap_err();
    assert!(matches!(err, DbError::UnsupportedUrl(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
