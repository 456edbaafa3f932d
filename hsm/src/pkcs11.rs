//! PKCS#11 backend: an AES-256 KEK that never leaves the token seals blobs
//! with AES-256-GCM computed inside the token, and a token-resident key pair
//! signs the transparency log.
//!
//! Notes for SoftHSM2 (and most tokens):
//! - the module is initialised once per process ([`pkcs11_context`]); a
//!   second `C_Initialize` fails, so every sealer and signer shares it;
//! - tokens are found by label, never by slot id (SoftHSM2 assigns random ids);
//! - the associated data passed to GCM is never empty (it is the blob header);
//! - a tampered GCM blob fails with `CKR_GENERAL_ERROR` on SoftHSM2, which is
//!   mapped to [`HsmError::SealedBlobInvalid`];
//! - login state is per token and process: a second sealer on an already
//!   logged-in token has its PIN checked against the one that logged in.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use custos_audit::{AuditError, LogSigner, SignatureAlgorithm};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::blob::{self, Aead};
use crate::{HsmError, Pin, Pkcs11Config, SealContext, Sealer};

const BACKEND: &str = "pkcs11";
const GCM_PARAMS: &str = "ckm_aes_gcm;iv=96;tag=128";
const GCM_TAG_BITS: u64 = 128;
/// DER of OID 1.3.101.112 (Ed25519), the `CKA_EC_PARAMS` of an Ed25519 key.
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of OID 1.2.840.10045.3.1.7 (P-256 / prime256v1).
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

// ------------------------------------------------------------ process state

fn modules() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Per (module, token serial): a keyed hash of the PIN that logged in, so a
/// later open on an already logged-in token still verifies its PIN.
type LoginTags = Mutex<HashMap<(PathBuf, String), Vec<u8>>>;

fn logins() -> &'static LoginTags {
    static LOGINS: OnceLock<LoginTags> = OnceLock::new();
    LOGINS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn pin_tag_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        k
    })
}

fn pin_mac(pin: &Pin) -> Result<Hmac<Sha256>, HsmError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pin_tag_key())
        .map_err(|e| HsmError::Crypto(format!("HMAC key: {e}")))?;
    mac.update(pin.expose());
    Ok(mac)
}

/// Serialises key look-up-or-create so two openers in one process cannot
/// both create a key with the same label.
fn create_lock() -> &'static Mutex<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    &LOCK
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, HsmError> {
    m.lock()
        .map_err(|_| HsmError::Crypto("internal lock poisoned by a panic".into()))
}

/// The process-wide, initialised context of a PKCS#11 module.
///
/// `C_Initialize` may be called only once per process and module, so every
/// sealer and signer (and any tool in the same process that needs the
/// module) shares this context. It is never finalised.
pub fn pkcs11_context(module: &Path) -> Result<Pkcs11, HsmError> {
    let mut map = lock(modules())?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    if !module.is_file() {
        return Err(HsmError::ModuleMissing {
            path: module.to_path_buf(),
        });
    }
    let load_err = |reason: String| HsmError::ModuleLoad {
        path: module.to_path_buf(),
        reason,
    };
    let ctx = Pkcs11::new(module).map_err(|e| load_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e.to_string())),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

// ------------------------------------------------------------ token access

/// A logged-in read-write session on the token with a given label.
pub(crate) struct TokenSession {
    ctx: Pkcs11,
    slot: Slot,
    token_label: String,
    pub(crate) session: Session,
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<(Slot, String), HsmError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| HsmError::pkcs11("C_GetSlotList", e))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::pkcs11("C_GetTokenInfo", e))?;
        if info.label().trim_end() == label {
            found.push((slot, info.serial_number().trim_end().to_owned()));
        }
    }
    match found.len() {
        0 => Err(HsmError::TokenMissing {
            label: label.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        count => Err(HsmError::TokenAmbiguous {
            label: label.to_owned(),
            count,
        }),
    }
}

impl TokenSession {
    pub(crate) fn open(module: &Path, token_label: &str, pin: &Pin) -> Result<Self, HsmError> {
        if pin.is_empty() {
            return Err(HsmError::Config("the PIN is empty".into()));
        }
        let ctx = pkcs11_context(module)?;
        let (slot, serial) = find_token(&ctx, token_label)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| HsmError::pkcs11("C_OpenSession", e))?;
        let key = (module.to_path_buf(), serial);
        let mut logins = lock(logins())?;
        let raw = RawAuthPin::from(Box::new(pin.expose().to_vec()));
        let wrong_pin = || HsmError::WrongPin {
            token_label: token_label.to_owned(),
        };
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) => {
                let tag = pin_mac(pin)?.finalize().into_bytes().to_vec();
                logins.insert(key, tag);
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                // Another sealer of this process holds a logged-in session:
                // check our PIN against the one that logged in.
                let tag = logins.get(&key).ok_or_else(|| {
                    HsmError::Config(format!(
                        "token {token_label:?} is already logged in by someone else in this process"
                    ))
                })?;
                pin_mac(pin)?.verify_slice(tag).map_err(|_| wrong_pin())?;
            }
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid,
                _,
            )) => return Err(wrong_pin()),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked {
                    token_label: token_label.to_owned(),
                });
            }
            Err(e) => return Err(HsmError::pkcs11("C_Login", e)),
        }
        Ok(TokenSession {
            ctx,
            slot,
            token_label: token_label.to_owned(),
            session,
        })
    }

    fn has_mechanism(&self, m: MechanismType) -> Result<bool, HsmError> {
        Ok(self
            .ctx
            .get_mechanism_list(self.slot)
            .map_err(|e| HsmError::pkcs11("C_GetMechanismList", e))?
            .contains(&m))
    }

    fn require_mechanism(&self, m: MechanismType) -> Result<(), HsmError> {
        if self.has_mechanism(m)? {
            Ok(())
        } else {
            Err(HsmError::MechanismUnsupported {
                token_label: self.token_label.clone(),
                mechanism: m.to_string(),
            })
        }
    }

    pub(crate) fn find_one(
        &self,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, HsmError> {
        let mut found = self
            .session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| HsmError::pkcs11("C_FindObjects", e))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            count => Err(HsmError::KeyAmbiguous {
                label: label.to_owned(),
                count,
            }),
        }
    }

    pub(crate) fn attributes(
        &self,
        handle: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>, HsmError> {
        self.session
            .get_attributes(handle, types)
            .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))
    }

    /// Checks that a private or secret key is sensitive and non-extractable.
    fn check_protected(&self, handle: ObjectHandle, label: &str) -> Result<(), HsmError> {
        let attrs = self.attributes(
            handle,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )?;
        let unsuitable = |reason: &str| HsmError::KeyUnsuitable {
            label: label.to_owned(),
            reason: reason.to_owned(),
        };
        let (mut sensitive, mut extractable) = (None, None);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = Some(v),
                Attribute::Extractable(v) => extractable = Some(v),
                _ => {}
            }
        }
        if sensitive != Some(true) {
            return Err(unsuitable("not CKA_SENSITIVE"));
        }
        if extractable != Some(false) {
            return Err(unsuitable("CKA_EXTRACTABLE is not false"));
        }
        Ok(())
    }
}

fn random_id() -> Vec<u8> {
    let mut id = vec![0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

fn cka_id(ts: &TokenSession, handle: ObjectHandle) -> Result<Vec<u8>, HsmError> {
    Ok(ts
        .attributes(handle, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default())
}

/// Errors after which the session (or its login) is gone but a new session
/// may work: a network HSM failing over, a token re-inserted, a logout.
fn is_session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

/// A logged-in session and the handle of the key used through it.
struct Live {
    ts: TokenSession,
    key: ObjectHandle,
}

/// A token-resident key used through one session, re-established once when
/// the token drops the session. Keeps the PIN (zeroized on drop) for that.
struct KeyInToken {
    module: PathBuf,
    token_label: String,
    pin: Pin,
    class: ObjectClass,
    key_label: String,
    /// `CKA_ID` at open: after a reconnect the label must still name this key.
    key_id: Vec<u8>,
    live: Mutex<Live>,
}

impl KeyInToken {
    fn new(
        module: &Path,
        pin: &Pin,
        class: ObjectClass,
        key_label: &str,
        key_id: Vec<u8>,
        live: Live,
    ) -> Self {
        KeyInToken {
            module: module.to_path_buf(),
            token_label: live.ts.token_label.clone(),
            pin: pin.clone(),
            class,
            key_label: key_label.to_owned(),
            key_id,
            live: Mutex::new(live),
        }
    }

    /// Runs `op` on the session; if the session was lost, reconnects (same
    /// token, same PIN, same key) and runs it once more.
    fn run<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<Result<T, CkError>, HsmError> {
        let mut live = lock(&self.live)?;
        match op(&live.ts.session, live.key) {
            Err(e) if is_session_lost(&e) => {
                *live = self.reconnect()?;
                Ok(op(&live.ts.session, live.key))
            }
            other => Ok(other),
        }
    }

    fn reconnect(&self) -> Result<Live, HsmError> {
        let ts = TokenSession::open(&self.module, &self.token_label, &self.pin)?;
        let key =
            ts.find_one(self.class, &self.key_label)?
                .ok_or_else(|| HsmError::KekMissing {
                    what: format!(
                        "key labelled {:?} on token {:?} (after reconnecting)",
                        self.key_label, self.token_label
                    ),
                })?;
        ts.check_protected(key, &self.key_label)?;
        if cka_id(&ts, key)? != self.key_id {
            return Err(HsmError::KeyUnsuitable {
                label: self.key_label.clone(),
                reason: "after reconnecting, the label names a different key".into(),
            });
        }
        Ok(Live { ts, key })
    }
}

// ------------------------------------------------------------ sealer

/// Seals with an AES-256 KEK inside a PKCS#11 token (AES-256-GCM computed by
/// the token; the KEK is sensitive and non-extractable).
pub struct Pkcs11Sealer {
    token_label: String,
    kek_label: String,
    kek_id: String,
    kek: KeyInToken,
}

impl fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("token_label", &self.token_label)
            .field("kek_label", &self.kek_label)
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Sealer {
    /// Opens the KEK on the configured token, reading the PIN from the
    /// configured file or environment variable.
    pub fn open(cfg: &Pkcs11Config) -> Result<Self, HsmError> {
        // Check the module before the PIN source so a missing HSM is reported as such.
        pkcs11_context(&cfg.module)?;
        let pin = cfg.pin()?;
        Self::open_with_pin(
            &cfg.module,
            &cfg.token_label,
            &pin,
            &cfg.kek_label,
            cfg.create_kek,
        )
    }

    /// Opens the KEK labelled `kek_label` on the token labelled `token_label`,
    /// generating it in the token if absent and `create` is true.
    pub fn open_with_pin(
        module: &Path,
        token_label: &str,
        pin: &Pin,
        kek_label: &str,
        create: bool,
    ) -> Result<Self, HsmError> {
        if kek_label.is_empty() {
            return Err(HsmError::Config("kek_label is empty".into()));
        }
        let ts = TokenSession::open(module, token_label, pin)?;
        ts.require_mechanism(MechanismType::AES_GCM)?;
        let kek = {
            let _guard = lock(create_lock())?;
            match ts.find_one(ObjectClass::SECRET_KEY, kek_label)? {
                Some(h) => h,
                None if create => {
                    ts.require_mechanism(MechanismType::AES_KEY_GEN)?;
                    generate_kek(&ts, kek_label)?
                }
                None => {
                    return Err(HsmError::KekMissing {
                        what: format!("KEK labelled {kek_label:?} on token {token_label:?}"),
                    });
                }
            }
        };
        let id = check_kek(&ts, kek, kek_label)?;
        Ok(Pkcs11Sealer {
            token_label: token_label.to_owned(),
            kek_label: kek_label.to_owned(),
            kek_id: format!("pkcs11:{kek_label}:{}", hex::encode(&id)),
            kek: KeyInToken::new(
                module,
                pin,
                ObjectClass::SECRET_KEY,
                kek_label,
                id,
                Live { ts, key: kek },
            ),
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }
}

fn generate_kek(ts: &TokenSession, label: &str) -> Result<ObjectHandle, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32u64.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(random_id()),
    ];
    ts.session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| HsmError::pkcs11("C_GenerateKey (KEK)", e))
}

/// Verifies an existing KEK's attributes; returns its `CKA_ID`.
fn check_kek(ts: &TokenSession, kek: ObjectHandle, label: &str) -> Result<Vec<u8>, HsmError> {
    ts.check_protected(kek, label)?;
    let attrs = ts.attributes(
        kek,
        &[
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Id,
        ],
    )?;
    let (mut key_type, mut len, mut enc, mut dec, mut id) = (None, None, false, false, Vec::new());
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::ValueLen(l) => len = Some(u64::from(l)),
            Attribute::Encrypt(v) => enc = v,
            Attribute::Decrypt(v) => dec = v,
            Attribute::Id(v) => id = v,
            _ => {}
        }
    }
    let unsuitable = |reason: &str| HsmError::KeyUnsuitable {
        label: label.to_owned(),
        reason: reason.to_owned(),
    };
    if key_type != Some(KeyType::AES) || len != Some(32) {
        return Err(unsuitable("not an AES-256 key"));
    }
    if !enc || !dec {
        return Err(unsuitable("CKA_ENCRYPT and CKA_DECRYPT must be true"));
    }
    Ok(id)
}

fn is_auth_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::GeneralError
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        )
    )
}

impl Sealer for Pkcs11Sealer {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn kek_id(&self) -> String {
        self.kek_id.clone()
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = [0u8; 12];
        OsRng.fill_bytes(&mut iv);
        let mut out =
            blob::encode_header(Aead::Aes256Gcm, BACKEND, &self.kek_id, GCM_PARAMS, ctx, &iv)?;
        let header = &out;
        let ct = self
            .kek
            .run(|session, kek| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, header, GCM_TAG_BITS.into())?;
                session.encrypt(&Mechanism::AesGcm(params), kek, plaintext)
            })?
            .map_err(|e| HsmError::pkcs11("C_Encrypt (AES-GCM)", e))?;
        if ct.len() != plaintext.len() + blob::TAG_LEN {
            return Err(HsmError::Crypto(
                "token returned an unexpected GCM length".into(),
            ));
        }
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let p = blob::parse_for(sealed, Aead::Aes256Gcm, BACKEND, &self.kek_id, ctx)?;
        if p.params != GCM_PARAMS {
            return Err(HsmError::SealedBlobInvalid(format!(
                "unsupported parameters {:?}",
                p.params
            )));
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(p.nonce);
        let pt = self
            .kek
            .run(|session, kek| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, p.header, GCM_TAG_BITS.into())?;
                session
                    .decrypt(&Mechanism::AesGcm(params), kek, p.ciphertext)
                    .map(Zeroizing::new)
            })?
            .map_err(|e| {
                if is_auth_failure(&e) {
                    HsmError::SealedBlobInvalid(
                        "authentication failed (corrupt or tampered)".into(),
                    )
                } else {
                    HsmError::pkcs11("C_Decrypt (AES-GCM)", e)
                }
            })?;
        if pt.len() + blob::TAG_LEN != p.ciphertext.len() {
            return Err(HsmError::SealedBlobInvalid(
                "length mismatch after decryption".into(),
            ));
        }
        Ok(pt)
    }
}

// ------------------------------------------------------------ log signer

/// Key algorithm of a PKCS#11 log-signing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogKeyAlgorithm {
    /// Ed25519 if the token supports it, else ECDSA P-256.
    #[default]
    Auto,
    /// Ed25519 (`CKM_EDDSA`).
    Ed25519,
    /// ECDSA on P-256 over a SHA-256 digest computed client-side.
    EcdsaP256,
}

/// Signs with a key pair inside a PKCS#11 token (Ed25519, or ECDSA P-256
/// where the token lacks Ed25519). The private key is sensitive and
/// non-extractable; only the public key is ever read.
pub struct Pkcs11LogSigner {
    algorithm: SignatureAlgorithm,
    public_key: Vec<u8>,
    key: KeyInToken,
}

impl fmt::Debug for Pkcs11LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11LogSigner")
            .field("algorithm", &self.algorithm)
            .field("public_key", &hex::encode(&self.public_key))
            .finish_non_exhaustive()
    }
}

impl Pkcs11LogSigner {
    /// Opens the key pair labelled `key_label` on the token labelled
    /// `token_label`, generating it if absent and `create` is true.
    pub fn open(
        module: &Path,
        token_label: &str,
        pin: &Pin,
        key_label: &str,
        algorithm: LogKeyAlgorithm,
        create: bool,
    ) -> Result<Self, HsmError> {
        if key_label.is_empty() {
            return Err(HsmError::Config("key_label is empty".into()));
        }
        let ts = TokenSession::open(module, token_label, pin)?;
        let (key, alg) = {
            let _guard = lock(create_lock())?;
            match ts.find_one(ObjectClass::PRIVATE_KEY, key_label)? {
                Some(h) => (h, existing_algorithm(&ts, h, key_label, algorithm)?),
                None if create => {
                    let alg = match algorithm {
                        LogKeyAlgorithm::Ed25519 => SignatureAlgorithm::Ed25519,
                        LogKeyAlgorithm::EcdsaP256 => SignatureAlgorithm::EcdsaP256Sha256,
                        LogKeyAlgorithm::Auto => {
                            if ts.has_mechanism(MechanismType::EDDSA)?
                                && ts.has_mechanism(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN)?
                            {
                                SignatureAlgorithm::Ed25519
                            } else {
                                SignatureAlgorithm::EcdsaP256Sha256
                            }
                        }
                    };
                    (generate_key_pair(&ts, key_label, alg)?, alg)
                }
                None => {
                    return Err(HsmError::KekMissing {
                        what: format!(
                            "log-signing key labelled {key_label:?} on token {token_label:?}"
                        ),
                    });
                }
            }
        };
        ts.check_protected(key, key_label)?;
        let public_key = read_public_key(&ts, key_label, alg)?;
        let id = cka_id(&ts, key)?;
        Ok(Pkcs11LogSigner {
            algorithm: alg,
            public_key,
            key: KeyInToken::new(
                module,
                pin,
                ObjectClass::PRIVATE_KEY,
                key_label,
                id,
                Live { ts, key },
            ),
        })
    }
}

fn existing_algorithm(
    ts: &TokenSession,
    key: ObjectHandle,
    label: &str,
    wanted: LogKeyAlgorithm,
) -> Result<SignatureAlgorithm, HsmError> {
    let attrs = ts.attributes(key, &[AttributeType::KeyType, AttributeType::EcParams])?;
    let (mut kt, mut params) = (None, Vec::new());
    for a in attrs {
        match a {
            Attribute::KeyType(t) => kt = Some(t),
            Attribute::EcParams(p) => params = p,
            _ => {}
        }
    }
    let alg = match kt {
        Some(t) if t == KeyType::EC_EDWARDS && params == OID_ED25519 => SignatureAlgorithm::Ed25519,
        Some(t) if t == KeyType::EC_EDWARDS && params == edwards25519_printable() => {
            SignatureAlgorithm::Ed25519
        }
        Some(t) if t == KeyType::EC && params == OID_P256 => SignatureAlgorithm::EcdsaP256Sha256,
        _ => {
            return Err(HsmError::KeyUnsuitable {
                label: label.to_owned(),
                reason: "neither an Ed25519 nor a P-256 key".into(),
            });
        }
    };
    let matches = match wanted {
        LogKeyAlgorithm::Auto => true,
        LogKeyAlgorithm::Ed25519 => alg == SignatureAlgorithm::Ed25519,
        LogKeyAlgorithm::EcdsaP256 => alg == SignatureAlgorithm::EcdsaP256Sha256,
    };
    if !matches {
        return Err(HsmError::KeyUnsuitable {
            label: label.to_owned(),
            reason: format!("the key is {alg:?}, the configuration asks for {wanted:?}"),
        });
    }
    Ok(alg)
}

/// `PrintableString "edwards25519"`, the other accepted `CKA_EC_PARAMS` form.
fn edwards25519_printable() -> Vec<u8> {
    let mut v = vec![0x13, 12];
    v.extend_from_slice(b"edwards25519");
    v
}

fn generate_key_pair(
    ts: &TokenSession,
    label: &str,
    alg: SignatureAlgorithm,
) -> Result<ObjectHandle, HsmError> {
    let (mechanism, mech_type, oid) = match alg {
        SignatureAlgorithm::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            OID_ED25519,
        ),
        _ => (
            Mechanism::EccKeyPairGen,
            MechanismType::ECC_KEY_PAIR_GEN,
            OID_P256,
        ),
    };
    ts.require_mechanism(mech_type)?;
    let id = random_id();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(oid.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let (_pub, private) = ts
        .session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| HsmError::pkcs11("C_GenerateKeyPair (log key)", e))?;
    Ok(private)
}

fn read_public_key(
    ts: &TokenSession,
    label: &str,
    alg: SignatureAlgorithm,
) -> Result<Vec<u8>, HsmError> {
    let missing = || HsmError::KeyUnsuitable {
        label: label.to_owned(),
        reason: "no matching public key object".into(),
    };
    let public = ts
        .find_one(ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(missing)?;
    let point = ts
        .attributes(public, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(missing)?;
    decode_ec_point(&point, alg).ok_or_else(|| HsmError::KeyUnsuitable {
        label: label.to_owned(),
        reason: "unexpected CKA_EC_POINT encoding".into(),
    })
}

/// Decodes `CKA_EC_POINT` (a DER OCTET STRING, or raw on some tokens) into
/// 32 bytes for Ed25519 or a 33-byte SEC1 compressed point for P-256.
fn decode_ec_point(point: &[u8], alg: SignatureAlgorithm) -> Option<Vec<u8>> {
    let unwrap = |len: usize| -> Option<&[u8]> {
        if point.len() == len + 2 && point[0] == 0x04 && usize::from(point[1]) == len {
            Some(&point[2..])
        } else if point.len() == len {
            Some(point)
        } else {
            None
        }
    };
    match alg {
        SignatureAlgorithm::Ed25519 => unwrap(32).map(<[u8]>::to_vec),
        _ => {
            let raw = unwrap(65)?;
            if raw[0] != 0x04 {
                return None;
            }
            let mut out = Vec::with_capacity(33);
            out.push(0x02 | (raw[64] & 1));
            out.extend_from_slice(&raw[1..33]);
            Some(out)
        }
    }
}

impl LogSigner for Pkcs11LogSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        self.sign_on_token(message).map_err(AuditError::signer)
    }
}

impl Pkcs11LogSigner {
    /// Signs `message` on the token: EdDSA over the message, or ECDSA over
    /// its SHA-256 (the token's `CKM_ECDSA` takes a digest).
    fn sign_on_token(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let sig = match self.algorithm {
            SignatureAlgorithm::Ed25519 => self
                .key
                .run(|session, key| {
                    session.sign(
                        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                        key,
                        message,
                    )
                })?
                .map_err(|e| HsmError::pkcs11("C_Sign (EdDSA)", e))?,
            _ => {
                let digest = Sha256::digest(message);
                self.key
                    .run(|session, key| session.sign(&Mechanism::Ecdsa, key, &digest))?
                    .map_err(|e| HsmError::pkcs11("C_Sign (ECDSA)", e))?
            }
        };
        if sig.len() != 64 {
            return Err(HsmError::Crypto(format!(
                "token returned a {}-byte signature",
                sig.len()
            )));
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_decoding() {
        let mut ed = vec![0x04, 32];
        ed.extend_from_slice(&[9u8; 32]);
        assert_eq!(
            decode_ec_point(&ed, SignatureAlgorithm::Ed25519),
            Some(vec![9u8; 32])
        );
        assert_eq!(
            decode_ec_point(&[9u8; 32], SignatureAlgorithm::Ed25519),
            Some(vec![9u8; 32])
        );
        assert_eq!(
            decode_ec_point(&ed[..33], SignatureAlgorithm::Ed25519),
            None
        );
        let mut p = vec![0x04, 65, 0x04];
        p.extend_from_slice(&[1u8; 32]);
        p.extend_from_slice(&[2u8; 31]);
        p.push(3);
        let c = decode_ec_point(&p, SignatureAlgorithm::EcdsaP256Sha256).unwrap();
        assert_eq!(c[0], 0x03);
        assert_eq!(&c[1..], &[1u8; 32]);
    }

    #[test]
    fn missing_module_is_reported_as_such() {
        let err = pkcs11_context(Path::new("/nonexistent/libpkcs11.so")).unwrap_err();
        assert!(matches!(err, HsmError::ModuleMissing { .. }), "{err}");
    }
}
