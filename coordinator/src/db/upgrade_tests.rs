//! A database made by an earlier version (without the columns added since)
//! is upgraded in place when the coordinator opens it, on SQLite and
//! PostgreSQL, and keeps its rows (the EVM-only `evm_txs` copied into the
//! chain-neutral `chain_txs`; a key made before HD derivation and signature
//! schemes keeps its row, with no chain code, scheme or public package).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;

/// The first versions of the tables that gained columns.
const OLD_TABLES: [&str; 3] = [
    "CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, group_id TEXT NOT NULL, curve TEXT NOT NULL,
        threshold BIGINT NOT NULL, participants TEXT NOT NULL, public_key BLOB,
        eth_address TEXT, chain TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE evm_txs (
        withdrawal_id TEXT PRIMARY KEY, chain TEXT NOT NULL, sender TEXT NOT NULL,
        nonce BIGINT NOT NULL, unsigned_tx BLOB NOT NULL, raw_tx BLOB, tx_hash TEXT,
        sends BIGINT NOT NULL, block_number BIGINT, created_ms BIGINT NOT NULL,
        UNIQUE (chain, sender, nonce))",
    "CREATE TABLE withdrawals (
        id TEXT PRIMARY KEY, client_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL, wallet TEXT NOT NULL, chain TEXT NOT NULL,
        asset TEXT NOT NULL, destination TEXT NOT NULL, amount TEXT NOT NULL,
        fee_cap TEXT NOT NULL, initiator TEXT NOT NULL, memo TEXT NOT NULL,
        state TEXT NOT NULL, risk_score BIGINT, risk_json TEXT, rule_id TEXT, outcome TEXT,
        explanation TEXT, decision_json TEXT, decision_index BIGINT, policy_hash TEXT,
        required TEXT, delay_secs BIGINT, cancel_group TEXT, statement BLOB,
        statement_expiry BIGINT, unsigned_tx BLOB, tx_digest BLOB, approved_at BIGINT,
        time_lock_until BIGINT, presig_id TEXT, signers TEXT, sig_r BLOB, sig_s BLOB,
        recovery_id BIGINT, reason TEXT, fee_paid TEXT, signer_notes TEXT NOT NULL,
        created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
        UNIQUE (client_id, idempotency_key))",
];

async fn old_database(url: &str) {
    let db = custos_service::db::Db::connect(url, 1).await.unwrap();
    for t in OLD_TABLES {
        db.execute_ddl(&t.replace("BLOB", db.backend.blob()))
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO evm_txs (withdrawal_id, chain, sender, nonce, unsigned_tx, sends, created_ms)
         VALUES ('w-1', 'anvil', '0xab', 4, $1, 1, 7)",
    )
    .bind(vec![2u8, 1])
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO keys (key_id, group_id, curve, threshold, participants, public_key,
                           eth_address, chain, state, created_at)
         VALUES ('k-old', 'g-1', 'secp256k1', 2, 'a,b,c', $1, '0xab', 'ethereum', 'ready', 't')",
    )
    .bind(vec![3u8; 33])
    .execute(&db.pool)
    .await
    .unwrap();
    db.pool.close().await;
}

async fn check_upgraded(url: &str) {
    // Twice: the second open finds everything in place and copies nothing again.
    for round in 0..2 {
        let db = crate::storage::connect(url).await.unwrap();
        let r = sqlx::query(
            "SELECT nonce, last_sent_ms, bumps, bump_tx, bump_presig, bump_signers, abandoned_tx
             FROM chain_txs WHERE withdrawal_id = 'w-1'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(r.get::<i64, _>("nonce"), 4);
        assert_eq!(r.get::<Option<i64>, _>("bumps"), None);
        assert_eq!(
            r.get::<Option<i64>, _>("last_sent_ms"),
            None,
            "round {round}"
        );
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chain_txs")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
        // The old table stays (additive) and gained its later columns.
        sqlx::query("UPDATE evm_txs SET bump_tx = $1, last_sent_ms = 9")
            .bind(vec![1u8])
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("SELECT tx_hash FROM withdrawals")
            .fetch_all(db.pool())
            .await
            .unwrap();
        sqlx::query("SELECT tx_hash FROM chain_tx_replaced")
            .fetch_all(db.pool())
            .await
            .unwrap();
        sqlx::query("SELECT outpoint FROM utxo_inputs")
            .fetch_all(db.pool())
            .await
            .unwrap();
        // HD derivation and signature schemes: the old key keeps its row
        // and has none of the later columns' values (it derives with the
        // legacy chain code); withdrawals gained their source columns, and
        // the derived-address table exists.
        let k = sqlx::query(
            "SELECT public_key, chain_code, scheme, public_package FROM keys WHERE key_id = 'k-old'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(k.get::<Vec<u8>, _>("public_key"), vec![3u8; 33]);
        assert_eq!(k.get::<Option<Vec<u8>>, _>("chain_code"), None);
        assert_eq!(k.get::<Option<String>, _>("scheme"), None);
        assert_eq!(k.get::<Option<Vec<u8>>, _>("public_package"), None);
        let key = db.key("k-old").await.unwrap().unwrap();
        assert_eq!(
            key.scheme,
            custos_mpc::SchemeId::EcdsaSecp256k1,
            "cggmp21 ECDSA"
        );
        assert_eq!(key.chain_code, None);
        sqlx::query("SELECT source_path, source_address FROM withdrawals")
            .fetch_all(db.pool())
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM derived_addresses")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        db.pool().close().await;
    }
}

#[tokio::test]
async fn an_old_sqlite_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    old_database(&url).await;
    check_upgraded(&url).await;
}

#[tokio::test]
async fn an_old_postgres_database_is_upgraded_in_place() {
    let url = custos_service::db::testdb::fresh_pg_url("upgrade")
        .await
        .expect("PostgreSQL (scripts/ensure-services.sh)");
    old_database(&url).await;
    check_upgraded(&url).await;
}
