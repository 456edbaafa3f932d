//! HD-derived deposit addresses of the wallets (`DeriveAddress`).
//!
//! # Design
//!
//! A wallet's child key at `m/0/<index>` (non-hardened BIP32, derived from
//! the key's public key and chain code: `custos_mpc::hd`) has its own
//! address in the wallet chain's format. A backend asks for one per
//! customer; the coordinator records it (table `derived_addresses`), lists
//! it, and the deposit scanners of both chain families watch it beside the
//! wallet's own address and credit what it receives to the wallet's ledger
//! account (`chain::deposits`, `chain::evm_deposits`). Deriving is
//! idempotent: the same wallet and index always give the same row, and a
//! second label for it is refused rather than silently kept or replaced.
//!
//! The coordinator derives from the chain code the signers returned at
//! keygen (stored with the key); the signers never take an address or a
//! public key from it: a withdrawal from a derived address names the path,
//! and each signer derives the child key from its own share's extended
//! public key and checks the address itself.
//!
//! Derivation goes through the key's scheme (`KeyRow::derive`): ECDSA keys
//! derive BIP32 children of their key; FROST taproot keys children of
//! their internal key, each its own P2TR (BIP86) address, with the child's
//! public package for combining (`custos_mpc::frost::hd`); Ed25519 keys
//! have none (SLIP-10 defines only hardened ed25519 derivation) and are
//! refused with `FAILED_PRECONDITION`.

use custos_mpc::DerivationPath;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, KeyRow};
use crate::error::CoordError;

/// The branch of the derivation tree deposit addresses come from (BIP44's
/// "external chain"): index `i` is `m/0/i`.
pub const DEPOSIT_BRANCH: u32 = 0;

/// Longest label accepted.
pub const MAX_LABEL_LEN: usize = 128;

/// Idempotent DDL (`BLOB` is rewritten for PostgreSQL by the caller).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS derived_addresses (
    wallet TEXT NOT NULL,
    path TEXT NOT NULL,
    idx BIGINT NOT NULL,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    public_key BLOB NOT NULL,
    label TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (wallet, path),
    UNIQUE (chain, address)
);
"#;

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("derived addresses", e)
}

/// One derived address as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedAddress {
    /// The wallet (key id).
    pub wallet: String,
    /// Its chain.
    pub chain: String,
    /// `m/0/<index>`.
    pub path: String,
    /// The index under the deposit branch.
    pub index: u32,
    /// The address, in the chain's format.
    pub address: String,
    /// The child's key bytes (compressed SEC1; a taproot key's x-only
    /// output key).
    pub public_key: Vec<u8>,
    /// The caller's label ("" if none).
    pub label: String,
    /// When it was first derived, Unix milliseconds.
    pub created_ms: i64,
}

fn row(r: &AnyRow) -> DerivedAddress {
    DerivedAddress {
        wallet: r.get("wallet"),
        chain: r.get("chain"),
        path: r.get("path"),
        index: u32::try_from(r.get::<i64, _>("idx")).unwrap_or(u32::MAX),
        address: r.get("address"),
        public_key: r.get("public_key"),
        label: r.get("label"),
        created_ms: r.get("created_ms"),
    }
}

/// The deposit path of `index`; refuses indices of 2^31 and above (hardened).
pub fn deposit_path(index: u32) -> Result<DerivationPath, CoordError> {
    DerivationPath::from_indices(&[DEPOSIT_BRANCH, index])
        .map_err(|e| CoordError::invalid("index", e.to_string()))
}

/// `key`'s child at `path` (`KeyRow::derive`) and its address on the
/// key's chain.
#[derive(Clone, Debug)]
pub struct Child {
    /// The address, in the chain's format (P2TR for a taproot key).
    pub address: String,
    /// The child's key bytes (compressed SEC1; a taproot key's x-only
    /// output key).
    pub public_key: Vec<u8>,
    /// What combining the child's partials takes.
    pub public_package: Vec<u8>,
    /// The key's chain code the child was derived with.
    pub chain_code: Option<[u8; 32]>,
}

/// The child of `key` at `path` and its address on the key's chain.
pub fn derive(key: &KeyRow, path: &DerivationPath) -> Result<Child, CoordError> {
    let child = key.derive(path)?;
    let on = if key.chain.is_empty() {
        "ethereum"
    } else {
        &key.chain
    };
    let address = custos_chains::family::wallet_address(on, &child.public_key)
        .map_err(|e| CoordError::Internal(format!("key {} on {on}: {e}", key.key_id)))?;
    Ok(Child {
        address,
        public_key: child.public_key,
        public_package: child.public_package,
        chain_code: child.chain_code,
    })
}

/// Derives (or returns the recorded) deposit address `index` of `key`.
///
/// A new address is logged (`address_derived`, through `log`, the audit
/// trail's append) before it is recorded or handed out: an address that
/// can receive funds is one an auditor can re-derive. If the log refuses,
/// nothing is recorded and the caller gets the error (fail closed). Two
/// callers deriving the same new address at once may both log it; the
/// entries are identical, and the table keeps one row.
pub async fn derive_address(
    db: &Db,
    key: &KeyRow,
    index: u32,
    label: &str,
    now_ms: i64,
    actor: &str,
    log: impl AsyncFnOnce(custos_audit::EntryBody) -> Result<u64, CoordError>,
) -> Result<DerivedAddress, CoordError> {
    if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(CoordError::invalid(
            "label",
            format!("at most {MAX_LABEL_LEN} bytes, no control characters"),
        ));
    }
    if key.state != "ready" {
        return Err(CoordError::precondition(
            "key",
            key.key_id.clone(),
            format!("is {}", key.state),
        ));
    }
    let path = deposit_path(index)?;
    let child = derive(key, &path)?;
    let fresh = DerivedAddress {
        wallet: key.key_id.clone(),
        chain: key.chain.clone(),
        path: path.to_string(),
        index,
        address: child.address,
        public_key: child.public_key,
        label: label.to_owned(),
        created_ms: now_ms,
    };
    if get(db.pool(), &fresh.wallet, &fresh.path).await?.is_none() {
        log(custos_audit::EntryBody::AddressDerived {
            key_id: fresh.wallet.clone(),
            chain: fresh.chain.clone(),
            path: fresh.path.clone(),
            address: fresh.address.clone(),
            public_key: fresh.public_key.clone(),
            chain_code: child.chain_code.map(|c| c.to_vec()).unwrap_or_default(),
            actor: actor.to_owned(),
        })
        .await?;
    }
    sqlx::query(
        "INSERT INTO derived_addresses (wallet, path, idx, chain, address, public_key, label, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(&fresh.wallet)
    .bind(&fresh.path)
    .bind(i64::from(index))
    .bind(&fresh.chain)
    .bind(&fresh.address)
    .bind(&fresh.public_key)
    .bind(&fresh.label)
    .bind(now_ms)
    .execute(db.pool())
    .await
    .map_err(db_err)?;
    let stored = get(db.pool(), &fresh.wallet, &fresh.path)
        .await?
        .ok_or_else(|| CoordError::Internal(format!("derived address {} vanished", fresh.path)))?;
    // A row made earlier must be the same derivation (it is, unless the
    // key's chain code changed, which nothing does); a second label is
    // refused so that a typo does not attach one customer's reference to
    // another's address.
    if stored.address != fresh.address {
        return Err(CoordError::Internal(format!(
            "wallet {} {}: recorded address {} differs from the derivation {}",
            fresh.wallet, fresh.path, stored.address, fresh.address
        )));
    }
    if !label.is_empty() && stored.label != label {
        return Err(CoordError::already_exists(
            "derived address",
            format!("{} {}", fresh.wallet, fresh.path),
            format!("is already derived with label {:?}", stored.label),
        ));
    }
    Ok(stored)
}

/// One recorded derived address.
pub async fn get(
    pool: &sqlx::AnyPool,
    wallet: &str,
    path: &str,
) -> Result<Option<DerivedAddress>, CoordError> {
    let r = sqlx::query("SELECT * FROM derived_addresses WHERE wallet = $1 AND path = $2")
        .bind(wallet)
        .bind(path)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    Ok(r.as_ref().map(row))
}

/// The recorded derived addresses of `wallet` (every wallet's for ""), by
/// wallet and index.
pub async fn list(db: &Db, wallet: &str) -> Result<Vec<DerivedAddress>, CoordError> {
    let rows = sqlx::query(
        "SELECT * FROM derived_addresses WHERE $1 = '' OR wallet = $1 ORDER BY wallet, idx, path",
    )
    .bind(wallet)
    .fetch_all(db.pool())
    .await
    .map_err(db_err)?;
    Ok(rows.iter().map(row).collect())
}

/// Every derived address on `chain` and its wallet, for the deposit
/// scanners (which credit what it receives to that wallet).
pub async fn on_chain(
    pool: &sqlx::AnyPool,
    chain: &str,
) -> Result<Vec<(String, String)>, CoordError> {
    let rows = sqlx::query("SELECT wallet, address FROM derived_addresses WHERE chain = $1")
        .bind(chain)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>("wallet"), r.get::<String, _>("address")))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn ready_key(db: &Db, id: &str, chain: &str, code: Option<[u8; 32]>) -> KeyRow {
        db.insert_key(
            id,
            "g",
            2,
            &["a".into(), "b".into(), "c".into()],
            chain,
            custos_mpc::SchemeId::EcdsaSecp256k1,
        )
        .await
        .unwrap();
        // The generator point: any valid key does.
        let pk = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        let address = custos_chains::family::wallet_address(chain, &pk).unwrap();
        db.finish_key(
            id,
            Some((&pk, &pk)),
            code.as_ref().map(|c| &c[..]),
            Some(&address),
        )
        .await
        .unwrap();
        db.key(id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn derived_addresses_are_recorded_listed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        recorded_listed_and_idempotent(crate::storage::open(dir.path()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn derived_addresses_are_recorded_listed_and_idempotent_on_postgres() {
        let url = custos_service::db::testdb::fresh_pg_url("derived")
            .await
            .expect("PostgreSQL (scripts/ensure-services.sh)");
        recorded_listed_and_idempotent(crate::storage::connect(&url).await.unwrap()).await;
    }

    /// Derives with a log that keeps what it was given.
    async fn derive(
        db: &Db,
        key: &KeyRow,
        index: u32,
        label: &str,
        now_ms: i64,
        logged: &std::sync::Mutex<Vec<custos_audit::EntryBody>>,
    ) -> Result<DerivedAddress, CoordError> {
        derive_address(db, key, index, label, now_ms, "backend", async |e| {
            let mut logged = logged.lock().unwrap();
            logged.push(e);
            Ok(logged.len() as u64)
        })
        .await
    }

    async fn recorded_listed_and_idempotent(db: Db) {
        let logged = std::sync::Mutex::new(Vec::new());
        let eth = ready_key(&db, "hot", "anvil", Some([9; 32])).await;
        let ltc = ready_key(&db, "ltc", "litecoin-regtest", None).await;
        let a = derive(&db, &eth, 5, "customer-5", 1, &logged)
            .await
            .unwrap();
        assert_eq!(a.path, "m/0/5");
        assert!(a.address.starts_with("0x"));
        let xpub = eth.extended_public_key().unwrap();
        let child = xpub.derive(&"m/0/5".parse().unwrap()).unwrap();
        assert_eq!(a.public_key, child.public_key().to_vec());
        // Again: the same row (the first creation time), with or without the label.
        assert_eq!(
            derive(&db, &eth, 5, "customer-5", 2, &logged)
                .await
                .unwrap(),
            a
        );
        assert_eq!(derive(&db, &eth, 5, "", 3, &logged).await.unwrap(), a);
        let e = derive(&db, &eth, 5, "someone-else", 4, &logged)
            .await
            .unwrap_err();
        assert!(matches!(e, CoordError::AlreadyExists { .. }), "{e}");
        // Hardened indices cannot be derived without the private key.
        let e = derive(&db, &eth, 1 << 31, "", 5, &logged)
            .await
            .unwrap_err();
        assert!(matches!(e, CoordError::InvalidArgument { .. }), "{e}");
        // A key without a chain code derives with the legacy one.
        let b = derive(&db, &ltc, 0, "", 6, &logged).await.unwrap();
        assert!(b.address.starts_with("rltc1q"), "{}", b.address);
        assert_eq!(
            ltc.extended_public_key().unwrap().chain_code(),
            custos_mpc::hd::legacy_chain_code(&ltc.public_key.clone().unwrap().try_into().unwrap())
        );
        derive(&db, &eth, 2, "", 7, &logged).await.unwrap();
        let all = list(&db, "").await.unwrap();
        let paths: Vec<_> = all.iter().map(|d| (d.wallet.as_str(), d.index)).collect();
        assert_eq!(paths, [("hot", 2), ("hot", 5), ("ltc", 0)]);
        assert_eq!(list(&db, "ltc").await.unwrap(), vec![b.clone()]);
        assert_eq!(
            on_chain(db.pool(), "litecoin-regtest").await.unwrap(),
            vec![("ltc".to_owned(), b.address.clone())]
        );
        // Each new address was logged once, before it was recorded; a
        // repeat logs nothing.
        let logged = logged.into_inner().unwrap();
        let paths: Vec<_> = logged
            .iter()
            .map(|e| match e {
                custos_audit::EntryBody::AddressDerived {
                    key_id,
                    path,
                    address,
                    chain_code,
                    actor,
                    ..
                } => {
                    assert_eq!(actor, "backend");
                    let want = if key_id == "hot" {
                        vec![9; 32]
                    } else {
                        ltc.extended_public_key().unwrap().chain_code().to_vec()
                    };
                    assert_eq!(chain_code, &want);
                    (key_id.as_str(), path.as_str(), address.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("hot", "m/0/5", a.address.clone()),
                ("ltc", "m/0/0", b.address.clone()),
                (
                    "hot",
                    "m/0/2",
                    list(&db, "hot").await.unwrap()[0].address.clone()
                ),
            ]
        );
        // Fail closed: an address the log refused is neither recorded nor
        // handed out.
        let e = derive_address(&db, &eth, 9, "", 8, "backend", async |_| {
            Err(CoordError::unavailable("audit log down"))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, CoordError::Unavailable { .. }), "{e}");
        assert!(get(db.pool(), "hot", "m/0/9").await.unwrap().is_none());
    }

    /// A FROST key of `scheme` on `chain`, ready, with the package its DKG made.
    async fn frost_key<C: custos_mpc::frost::FrostSuite>(db: &Db, id: &str, chain: &str) -> KeyRow {
        let shares = futures::executor::block_on(custos_mpc::sim::keygen_with::<
            custos_mpc::frost::Frost<C>,
        >(2, vec![(); 3], None))
        .unwrap();
        let public = shares[0].public();
        db.insert_key(
            id,
            "",
            2,
            &["a".into(), "b".into(), "c".into()],
            chain,
            C::SCHEME,
        )
        .await
        .unwrap();
        let pk = public.key_bytes();
        let address = custos_chains::family::wallet_address(chain, &pk).unwrap();
        let package = serde_json::to_vec(public).unwrap();
        db.finish_key(id, Some((&pk, &package)), None, Some(&address))
            .await
            .unwrap();
        db.key(id).await.unwrap().unwrap()
    }

    /// A taproot key's deposit address is P2TR of its child's output key,
    /// with the child's public package for combining; an Ed25519 key has
    /// no derived address (failed precondition, saying why).
    #[tokio::test]
    async fn taproot_keys_derive_p2tr_addresses_and_ed25519_keys_none() {
        use custos_mpc::frost::{Ed25519, FrostPublicKey, FrostSuite, Secp256k1Tr};
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).await.unwrap();
        let tr = frost_key::<Secp256k1Tr>(&db, "tr", "litecoin-regtest").await;
        let logged = std::sync::Mutex::new(Vec::new());
        let a = derive(&db, &tr, 7, "", 1, &logged).await.unwrap();
        // The logged chain code is the one the child was derived with.
        let base = custos_mpc::frost::hd::extended_public_key(
            &custos_mpc::frost::hd::internal_key(
                &serde_json::from_slice(tr.public_package.as_deref().unwrap()).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        match &logged.lock().unwrap()[..] {
            [
                custos_audit::EntryBody::AddressDerived {
                    chain_code,
                    public_key,
                    ..
                },
            ] => {
                assert_eq!(chain_code, &base.chain_code().to_vec());
                assert_eq!(public_key, &a.public_key);
            }
            other => panic!("{other:?}"),
        }
        assert!(a.address.starts_with("rltc1p"), "{}", a.address);
        let public: FrostPublicKey<Secp256k1Tr> =
            serde_json::from_slice(tr.public_package.as_deref().unwrap()).unwrap();
        let child = Secp256k1Tr::derive_public(&public, &"m/0/7".parse().unwrap()).unwrap();
        assert_eq!(a.public_key, child.key_bytes());
        let c = super::derive(&tr, &"m/0/7".parse().unwrap()).unwrap();
        assert_eq!(c.public_package, serde_json::to_vec(&child).unwrap());
        assert_ne!(a.address, tr.address.clone().unwrap());
        let ed = frost_key::<Ed25519>(&db, "ed", "message").await;
        let e = derive(&db, &ed, 7, "", 2, &logged).await.unwrap_err();
        assert!(matches!(e, CoordError::FailedPrecondition { .. }), "{e}");
        assert!(e.to_string().contains("SLIP-10"), "{e}");
    }
}
