//! The coordinator's database (SQLite in its data dir).
//!
//! Every state change is committed before the action it allows: a
//! presignature is marked consumed before its partials are requested, a
//! sign request is recorded before any signer is asked.

use custos_service::db::{Backend, Db as SqlDb, is_unique_violation};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::CoordError;

/// Idempotent DDL; `BLOB` is rewritten for PostgreSQL.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY,
    participants TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    curve TEXT NOT NULL,
    threshold BIGINT NOT NULL,
    participants TEXT NOT NULL,
    public_key BLOB,
    eth_address TEXT,
    chain TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    chain_code BLOB
);
CREATE TABLE IF NOT EXISTS presignatures (
    presig_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    signers TEXT NOT NULL,
    state TEXT NOT NULL,
    nonce_point BLOB,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS presignatures_ready ON presignatures (key_id, state);
CREATE TABLE IF NOT EXISTS key_share_changes (
    key_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    change TEXT NOT NULL,
    repaired TEXT NOT NULL,
    signers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key_id, seq)
);
CREATE TABLE IF NOT EXISTS key_lifecycle (
    key_id TEXT PRIMARY KEY,
    rotating_to TEXT,
    rotation_log_index BIGINT,
    retired_at TEXT,
    retirement_index BIGINT,
    successor TEXT,
    reason TEXT,
    shares_destroyed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_sweeps (
    key_id TEXT NOT NULL,
    withdrawal_id TEXT NOT NULL,
    source_address TEXT NOT NULL,
    derivation_index BIGINT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, withdrawal_id)
);
CREATE TABLE IF NOT EXISTS sign_requests (
    request_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    state TEXT NOT NULL,
    mode TEXT,
    presig_id TEXT,
    signers TEXT,
    r BLOB,
    s BLOB,
    recovery_id BIGINT,
    error TEXT,
    created_at TEXT NOT NULL
);
"#;

/// Drops a key's unused pool items (ready or being made).
const DISCARD_POOL: &str = "UPDATE presignatures SET state = 'discarded' WHERE key_id = $1 AND state IN ('ready', 'generating')";

/// A key row.
#[derive(Clone, Debug)]
pub struct KeyRow {
    /// Key id.
    pub key_id: String,
    /// Signer group.
    pub group_id: String,
    /// Threshold.
    pub threshold: u16,
    /// Participants in keygen order.
    pub participants: Vec<String>,
    /// Compressed public key (ready keys).
    pub public_key: Option<Vec<u8>>,
    /// The wallet's address on its chain, in that chain's format (ready
    /// keys; stored in column `eth_address`, its name from EVM-only days).
    pub address: Option<String>,
    /// `creating`, `ready`, `failed`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// Chain the key's wallet pays on (empty: none, a FROST key signing
    /// digests or messages).
    pub chain: String,
    /// The chain code the signers generated with the key (32 bytes), for
    /// HD-derived addresses; `None` for keys made before HD support.
    pub chain_code: Option<Vec<u8>>,
    /// Signature scheme (column `scheme`; keys from before it are cggmp21 ECDSA).
    pub scheme: custos_mpc::SchemeId,
    /// What combining needs besides the partials, as every signer returned
    /// it at keygen (`custos_mpc::erased::KeygenOutput::public_package`);
    /// `None` for ECDSA keys from before it was stored (their public key is it).
    pub public_package: Option<Vec<u8>>,
}

/// A key's rotation and retirement, as recorded (`key_lifecycle`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLifecycle {
    /// The key its balances are being swept to (a rotation).
    pub rotating_to: Option<String>,
    /// The `key_rotation_started` entry.
    pub rotation_log_index: Option<u64>,
    /// When it was retired (RFC 3339).
    pub retired_at: Option<String>,
    /// The `key_retired` entry (absent while the retirement is being logged).
    pub retirement_index: Option<u64>,
    /// The key that took over its balances, if any.
    pub successor: String,
    /// Why it was retired.
    pub reason: String,
    /// Signers that reported their share destroyed.
    pub shares_destroyed: Vec<String>,
}

/// One sweep withdrawal of a rotation (`key_sweeps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepRow {
    /// The withdrawal.
    pub withdrawal_id: String,
    /// The address swept.
    pub source_address: String,
    /// Its derivation index (-1: the key's own address).
    pub derivation_index: i64,
    /// Asset.
    pub asset: String,
    /// Amount, base units.
    pub amount: String,
}

/// A refresh or repair of a key's shares, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareChangeRow {
    /// The share generation in force afterwards.
    pub generation: u64,
    /// `refresh` or `repair`.
    pub change: String,
    /// The repaired signer (empty for a refresh).
    pub repaired: String,
    /// Signers that took part.
    pub signers: Vec<String>,
    /// RFC 3339.
    pub at: String,
}

impl KeyRow {
    /// The key's extended public key: its public key and chain code (the
    /// legacy chain code for keys made without one, as every signer
    /// derives it: `custos_mpc::hd`). `None` until the key is ready.
    pub fn extended_public_key(&self) -> Result<custos_mpc::ExtendedPublicKey, CoordError> {
        let pk = self.public_key.as_deref().ok_or_else(|| self.not_ready())?;
        custos_mpc::ExtendedPublicKey::of_key(pk, self.chain_code()?)
            .map_err(|e| CoordError::Internal(format!("key {}: {e}", self.key_id)))
    }

    fn not_ready(&self) -> CoordError {
        CoordError::precondition("key", self.key_id.clone(), format!("is {}", self.state))
    }

    /// The chain code the key's keygen made, if any (ECDSA keys since HD
    /// support).
    pub fn chain_code(&self) -> Result<Option<[u8; 32]>, CoordError> {
        self.chain_code
            .as_ref()
            .map(|c| {
                <[u8; 32]>::try_from(c.as_slice()).map_err(|_| {
                    CoordError::Internal(format!(
                        "key {}: stored chain code is not 32 bytes",
                        self.key_id
                    ))
                })
            })
            .transpose()
    }

    /// The key's child at `path` through its scheme
    /// (`custos_mpc::ThresholdScheme::derive_public`): the child's public
    /// key and the public package combining its partials takes. A scheme
    /// without children below the master (Ed25519) is a failed
    /// precondition naming the key.
    pub fn derive(
        &self,
        path: &custos_mpc::DerivationPath,
    ) -> Result<custos_mpc::erased::DerivedKey, CoordError> {
        let package = self.combine_package().ok_or_else(|| self.not_ready())?;
        custos_mpc::scheme(self.scheme)
            .derive_public(package, self.chain_code()?, path)
            .map_err(|e| match e {
                custos_mpc::MpcError::Unsupported { .. } => {
                    CoordError::precondition("key", self.key_id.clone(), e.to_string())
                }
                other => CoordError::invalid("path", other.to_string()),
            })
    }

    /// What combining takes as the key's public form.
    pub fn combine_package(&self) -> Option<&[u8]> {
        self.public_package
            .as_deref()
            .or(self.public_key.as_deref())
    }
}

/// A completed or attempted sign request.
#[derive(Clone, Debug)]
pub struct SignRow {
    /// Key.
    pub key_id: String,
    /// Digest.
    pub digest: Vec<u8>,
    /// `started`, `signed`, `failed`.
    pub state: String,
    /// `presignature` / `interactive`.
    pub mode: Option<String>,
    /// Presignature used.
    pub presig_id: Option<String>,
    /// Signers, JSON list.
    pub signers: Option<String>,
    /// r.
    pub r: Option<Vec<u8>>,
    /// s.
    pub s: Option<Vec<u8>>,
    /// Recovery id.
    pub recovery_id: Option<i64>,
    /// The signature in its scheme's encoding (`None` before it was stored:
    /// ECDSA `r || s`).
    pub signature: Option<Vec<u8>>,
    /// Failure reason.
    pub error: Option<String>,
}

/// Database handle.
#[derive(Clone, Debug)]
pub struct Db {
    pool: sqlx::AnyPool,
    backend: Backend,
}

/// Now on the one clock, RFC 3339 (UTC), as the tables store it.
fn now() -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(custos_clock::now_ms()) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("keys and signing sessions", e)
}

fn list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Marks a ready presignature consumed, inside the caller's transaction
/// (which then records where it is used); `false` if it was not ready.
pub async fn consume_presig(
    conn: &mut sqlx::AnyConnection,
    presig_id: &str,
) -> Result<bool, CoordError> {
    let res = sqlx::query(
        "UPDATE presignatures SET state = 'consumed' WHERE presig_id = $1 AND state = 'ready'",
    )
    .bind(presig_id)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(res.rows_affected() == 1)
}

impl Db {
    /// Opens the database at `url` (`sqlite://...` or `postgres://...`) and
    /// creates this module's tables (keys, groups, presignatures, sign
    /// requests); [`crate::storage::connect`] adds every other module's.
    pub async fn connect(url: &str) -> Result<Db, CoordError> {
        let db = SqlDb::connect(url, 8)
            .await
            .map_err(|e| CoordError::storage("opening the database", e))?;
        let ddl = SCHEMA.replace("BLOB", db.backend.blob());
        db.execute_ddl(&ddl).await.map_err(db_err)?;
        // Databases from before HD support: keys without a chain code
        // derive with the legacy one (custos_mpc::hd).
        db.add_column_if_missing("keys", "chain_code", db.backend.blob())
            .await
            .map_err(db_err)?;
        // Additive upgrades: signature schemes (issue 18).
        let blob = db.backend.blob();
        db.add_column_if_missing("keys", "scheme", "TEXT")
            .await
            .map_err(db_err)?;
        db.add_column_if_missing("keys", "public_package", blob)
            .await
            .map_err(db_err)?;
        db.add_column_if_missing("sign_requests", "signature", blob)
            .await
            .map_err(db_err)?;
        Ok(Db {
            pool: db.pool,
            backend: db.backend,
        })
    }

    /// The same database as the `custos-db` type the modules' schema
    /// functions take.
    pub fn sql(&self) -> SqlDb {
        SqlDb {
            pool: self.pool.clone(),
            backend: self.backend,
        }
    }

    /// The pool, for modules with their own tables.
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Cheap liveness probe.
    pub async fn ping(&self) -> Result<(), CoordError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    /// The ready group, if any.
    pub async fn ready_group(&self) -> Result<Option<(String, Vec<String>)>, CoordError> {
        let row =
            sqlx::query("SELECT group_id, participants FROM groups WHERE state = 'ready' ORDER BY created_at LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map(|r| (r.get::<String, _>(0), list(&r.get::<String, _>(1)))))
    }

    /// Records a group's aux-info run and its outcome.
    pub async fn set_group(
        &self,
        group_id: &str,
        participants: &[String],
        state: &str,
    ) -> Result<(), CoordError> {
        sqlx::query(
            "INSERT INTO groups (group_id, participants, state, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(group_id) DO UPDATE SET state = excluded.state",
        )
        .bind(group_id)
        .bind(serde_json::to_string(participants).unwrap_or_default())
        .bind(state)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Inserts a key in state `creating`; fails if the id exists.
    pub async fn insert_key(
        &self,
        key_id: &str,
        group_id: &str,
        threshold: u16,
        participants: &[String],
        chain: &str,
        scheme: custos_mpc::SchemeId,
    ) -> Result<(), CoordError> {
        let res = sqlx::query(
            "INSERT INTO keys (key_id, group_id, curve, threshold, participants, state, created_at, chain, scheme)
             VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7, $8)",
        )
        .bind(key_id)
        .bind(group_id)
        .bind(scheme.curve())
        .bind(i64::from(threshold))
        .bind(serde_json::to_string(participants).unwrap_or_default())
        .bind(now())
        .bind(chain)
        .bind(scheme.name())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(CoordError::already_exists("key", key_id, "already exists"))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    /// Marks a key ready with its public key and public package (and the
    /// chain code its signers generated, in the same statement: a ready key
    /// never lacks the chain code its shares carry), or failed.
    pub async fn finish_key(
        &self,
        key_id: &str,
        public: Option<(&[u8], &[u8])>,
        chain_code: Option<&[u8]>,
        address: Option<&str>,
    ) -> Result<(), CoordError> {
        let state = if public.is_some() { "ready" } else { "failed" };
        sqlx::query(
            "UPDATE keys SET state = $1, public_key = $2, eth_address = $3, public_package = $4,
             chain_code = $5 WHERE key_id = $6",
        )
        .bind(state)
        .bind(public.map(|p| p.0))
        .bind(address)
        .bind(public.map(|p| p.1))
        .bind(chain_code)
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    fn key_row(r: &AnyRow) -> KeyRow {
        KeyRow {
            key_id: r.get("key_id"),
            group_id: r.get("group_id"),
            threshold: u16::try_from(r.get::<i64, _>("threshold")).unwrap_or(0),
            participants: list(&r.get::<String, _>("participants")),
            public_key: r.get("public_key"),
            address: r.get("eth_address"),
            state: r.get("state"),
            created_at: r.get("created_at"),
            chain: r.get("chain"),
            chain_code: r.get("chain_code"),
            // ECDSA is what rows from before the column hold.
            scheme: r
                .get::<Option<String>, _>("scheme")
                .map_or(Ok(custos_mpc::SchemeId::EcdsaSecp256k1), |n| {
                    custos_mpc::SchemeId::from_name(&n)
                })
                // An unknown name (a newer version's row) reads as ECDSA,
                // which fails closed for it: its package is not a 33-byte
                // key, so nothing combines, and its signers hold its scheme.
                .unwrap_or(custos_mpc::SchemeId::EcdsaSecp256k1),
            public_package: r.get("public_package"),
        }
    }

    /// Drops a key's unused pool items (ready or being made): they were
    /// made under shares a refresh or repair is replacing. Returns how many.
    pub async fn discard_presigs(&self, key_id: &str) -> Result<u64, CoordError> {
        let res = sqlx::query(DISCARD_POOL)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected())
    }

    /// Records a refresh or repair of a key's shares in one transaction:
    /// the public package in force (the new verifying shares), the change,
    /// and no pool item left from before it.
    pub async fn record_share_change(
        &self,
        key_id: &str,
        public_package: &[u8],
        change: &ShareChangeRow,
    ) -> Result<(), CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("UPDATE keys SET public_package = $1 WHERE key_id = $2")
            .bind(public_package)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM key_share_changes WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO key_share_changes (key_id, seq, generation, change, repaired, signers, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key_id)
        .bind(seq)
        .bind(i64::try_from(change.generation).unwrap_or(i64::MAX))
        .bind(&change.change)
        .bind(&change.repaired)
        .bind(serde_json::to_string(&change.signers).unwrap_or_default())
        .bind(&change.at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(DISCARD_POOL)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    /// The last refresh or repair of a key's shares, if any.
    pub async fn last_share_change(
        &self,
        key_id: &str,
    ) -> Result<Option<ShareChangeRow>, CoordError> {
        let row = sqlx::query(
            "SELECT generation, change, repaired, signers, created_at FROM key_share_changes
             WHERE key_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| ShareChangeRow {
            generation: u64::try_from(r.get::<i64, _>("generation")).unwrap_or(0),
            change: r.get("change"),
            repaired: r.get("repaired"),
            signers: list(&r.get::<String, _>("signers")),
            at: r.get("created_at"),
        }))
    }

    /// A key's rotation and retirement record (default: none).
    pub async fn lifecycle(&self, key_id: &str) -> Result<KeyLifecycle, CoordError> {
        let row = sqlx::query("SELECT * FROM key_lifecycle WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let index = |r: &AnyRow, c: &str| {
            r.get::<Option<i64>, _>(c)
                .and_then(|i| u64::try_from(i).ok())
        };
        Ok(row.map_or_else(KeyLifecycle::default, |r| KeyLifecycle {
            rotating_to: r.get("rotating_to"),
            rotation_log_index: index(&r, "rotation_log_index"),
            retired_at: r.get("retired_at"),
            retirement_index: index(&r, "retirement_index"),
            successor: r.get::<Option<String>, _>("successor").unwrap_or_default(),
            reason: r.get::<Option<String>, _>("reason").unwrap_or_default(),
            shares_destroyed: list(&r.get::<String, _>("shares_destroyed")),
        }))
    }

    async fn ensure_lifecycle(&self, key_id: &str) -> Result<(), CoordError> {
        sqlx::query(
            "INSERT INTO key_lifecycle (key_id, shares_destroyed) VALUES ($1, '[]')
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Records that `key_id` is being rotated to `new_key_id`
    /// (`log_index`: its `key_rotation_started` entry, once logged).
    pub async fn set_rotation(
        &self,
        key_id: &str,
        new_key_id: &str,
        log_index: Option<u64>,
    ) -> Result<(), CoordError> {
        self.ensure_lifecycle(key_id).await?;
        sqlx::query(
            "UPDATE key_lifecycle SET rotating_to = $1, rotation_log_index = $2 WHERE key_id = $3",
        )
        .bind(new_key_id)
        .bind(log_index.and_then(|i| i64::try_from(i).ok()))
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Marks `key_id` retired (state `retired`: nothing signs with it from
    /// now on) and drops its pool, in one transaction, before the
    /// retirement is logged or any signer is asked to destroy its share.
    pub async fn mark_retired(
        &self,
        key_id: &str,
        successor: &str,
        reason: &str,
    ) -> Result<(), CoordError> {
        self.ensure_lifecycle(key_id).await?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("UPDATE keys SET state = 'retired' WHERE key_id = $1")
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "UPDATE key_lifecycle SET retired_at = COALESCE(retired_at, $1), successor = $2, reason = $3
             WHERE key_id = $4",
        )
        .bind(now())
        .bind(successor)
        .bind(reason)
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(DISCARD_POOL)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    /// Records the `key_retired` entry of `key_id`.
    pub async fn set_retirement_index(&self, key_id: &str, index: u64) -> Result<(), CoordError> {
        sqlx::query("UPDATE key_lifecycle SET retirement_index = $1 WHERE key_id = $2")
            .bind(i64::try_from(index).unwrap_or(i64::MAX))
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Adds signers that reported their share of `key_id` destroyed.
    pub async fn add_shares_destroyed(
        &self,
        key_id: &str,
        signers: &[String],
    ) -> Result<(), CoordError> {
        let mut all = self.lifecycle(key_id).await?.shares_destroyed;
        for s in signers {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        sqlx::query("UPDATE key_lifecycle SET shares_destroyed = $1 WHERE key_id = $2")
            .bind(serde_json::to_string(&all).unwrap_or_default())
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Records a sweep withdrawal of `key_id`'s rotation (after the others).
    pub async fn insert_sweep(&self, key_id: &str, sweep: &SweepRow) -> Result<(), CoordError> {
        sqlx::query(
            "INSERT INTO key_sweeps (key_id, withdrawal_id, source_address, derivation_index, asset, amount, seq, created_ms)
             SELECT $1, $2, $3, $4, $5, $6, COALESCE(MAX(seq), 0) + 1, $7 FROM key_sweeps WHERE key_id = $1
             ON CONFLICT (key_id, withdrawal_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(&sweep.withdrawal_id)
        .bind(&sweep.source_address)
        .bind(sweep.derivation_index)
        .bind(&sweep.asset)
        .bind(&sweep.amount)
        .bind(crate::clock::now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// The sweep withdrawals of `key_id`'s rotation, oldest first.
    pub async fn sweeps(&self, key_id: &str) -> Result<Vec<SweepRow>, CoordError> {
        let rows = sqlx::query("SELECT * FROM key_sweeps WHERE key_id = $1 ORDER BY seq")
            .bind(key_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| SweepRow {
                withdrawal_id: r.get("withdrawal_id"),
                source_address: r.get("source_address"),
                derivation_index: r.get("derivation_index"),
                asset: r.get("asset"),
                amount: r.get("amount"),
            })
            .collect())
    }

    /// The time now, as the database records it (RFC 3339).
    pub fn now_rfc3339() -> String {
        now()
    }

    /// One key.
    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRow>, CoordError> {
        let row = sqlx::query("SELECT * FROM keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.as_ref().map(Self::key_row))
    }

    /// All keys.
    pub async fn keys(&self) -> Result<Vec<KeyRow>, CoordError> {
        let rows = sqlx::query("SELECT * FROM keys ORDER BY created_at, key_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(Self::key_row).collect())
    }

    /// Records a presignature being generated.
    pub async fn insert_presig(
        &self,
        presig_id: &str,
        key_id: &str,
        signers: &[String],
    ) -> Result<(), CoordError> {
        sqlx::query("INSERT INTO presignatures (presig_id, key_id, signers, state, created_at) VALUES ($1, $2, $3, 'generating', $4)")
            .bind(presig_id)
            .bind(key_id)
            .bind(serde_json::to_string(signers).unwrap_or_default())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Sets a presignature's state (`ready` with its nonce point, or `failed`).
    pub async fn set_presig(
        &self,
        presig_id: &str,
        state: &str,
        nonce: Option<&[u8]>,
    ) -> Result<(), CoordError> {
        sqlx::query("UPDATE presignatures SET state = $1, nonce_point = COALESCE($2, nonce_point) WHERE presig_id = $3")
            .bind(state)
            .bind(nonce)
            .bind(presig_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Ready presignatures per key.
    pub async fn ready_presigs(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, Vec<String>)>, CoordError> {
        let rows = sqlx::query(
            "SELECT presig_id, signers FROM presignatures WHERE key_id = $1 AND state = 'ready' ORDER BY created_at",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), list(&r.get::<String, _>(1))))
            .collect())
    }

    /// Count of ready presignatures (all keys).
    pub async fn ready_presig_total(&self) -> Result<u32, CoordError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE state = 'ready'")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Atomically takes a ready presignature for `request_id`: only one
    /// caller can win it, and the request names it in the same commit (one
    /// fsync on the online path, and no presignature consumed by nobody
    /// after a crash in between).
    pub async fn take_presig(&self, presig_id: &str, request_id: &str) -> Result<bool, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !consume_presig(&mut tx, presig_id).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE sign_requests SET presig_id = $1, mode = 'presignature' WHERE request_id = $2",
        )
        .bind(presig_id)
        .bind(request_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Presignatures left `generating` by a crash can never be trusted: fail them.
    pub async fn fail_stale_presigs(&self) -> Result<u64, CoordError> {
        let res =
            sqlx::query("UPDATE presignatures SET state = 'failed' WHERE state = 'generating'")
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(res.rows_affected())
    }

    /// Records a new sign request; returns the existing row if the id was used.
    pub async fn begin_sign(
        &self,
        request_id: &str,
        key_id: &str,
        digest: &[u8],
    ) -> Result<Option<SignRow>, CoordError> {
        let res = sqlx::query(
            "INSERT INTO sign_requests (request_id, key_id, digest, state, created_at) VALUES ($1, $2, $3, 'started', $4)",
        )
        .bind(request_id)
        .bind(key_id)
        .bind(digest)
        .bind(now())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) if is_unique_violation(&e) => {
                let r = sqlx::query("SELECT * FROM sign_requests WHERE request_id = $1")
                    .bind(request_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(Some(SignRow {
                    key_id: r.get("key_id"),
                    digest: r.get("digest"),
                    state: r.get("state"),
                    mode: r.get("mode"),
                    presig_id: r.get("presig_id"),
                    signers: r.get("signers"),
                    r: r.get("r"),
                    s: r.get("s"),
                    recovery_id: r.get("recovery_id"),
                    signature: r.get("signature"),
                    error: r.get("error"),
                }))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    /// Records a sign request's outcome: the signature in its scheme's
    /// encoding, and ECDSA's `(r, s, recovery id)` where the scheme has them.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_sign(
        &self,
        request_id: &str,
        mode: &str,
        signers: &[String],
        sig: Option<(&[u8], &[u8], u8)>,
        signature: Option<&[u8]>,
        error: Option<&str>,
    ) -> Result<(), CoordError> {
        let state = if signature.is_some() {
            "signed"
        } else {
            "failed"
        };
        sqlx::query("UPDATE sign_requests SET state = $1, mode = $2, signers = $3, r = $4, s = $5, recovery_id = $6, error = $7, signature = $9 WHERE request_id = $8")
            .bind(state)
            .bind(mode)
            .bind(serde_json::to_string(signers).unwrap_or_default())
            .bind(sig.map(|s| s.0))
            .bind(sig.map(|s| s.1))
            .bind(sig.map(|s| i64::from(s.2)))
            .bind(error)
            .bind(request_id)
            .bind(signature)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// The public half of a presignature (ECDSA nonce point, FROST
    /// commitments) as its signers reported it.
    pub async fn presig_public(&self, presig_id: &str) -> Result<Option<Vec<u8>>, CoordError> {
        let row = sqlx::query("SELECT nonce_point FROM presignatures WHERE presig_id = $1")
            .bind(presig_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0)))
    }
}

#[cfg(test)]
mod upgrade_tests;
