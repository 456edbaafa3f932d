//! The crate's one error type.

use std::path::PathBuf;

/// Errors of this crate.
///
/// Messages never contain secret material (passphrases, PINs, plaintext,
/// key bytes). Start-up failures each have their own variant so an operator
/// can tell a missing HSM from a wrong PIN from an absent KEK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A secret share (unseal ceremony) is malformed or does not fit the others.
    #[error("invalid share: {0}")]
    InvalidShare(String),

    /// The sealed blob is corrupt, was sealed under another key, or is bound to another context.
    #[error("sealed blob invalid: {0}")]
    SealedBlobInvalid(String),

    /// The passphrase does not open the software KEK (its check value does not match).
    #[error("wrong passphrase for the software KEK in {}", path.display())]
    WrongPassphrase {
        /// The KEK metadata file.
        path: PathBuf,
    },

    /// The token refused the user PIN (`CKR_PIN_INCORRECT`).
    #[error("wrong PIN for PKCS#11 token {token_label:?}")]
    WrongPin {
        /// The token's label.
        token_label: String,
    },

    /// The token's user PIN is locked after too many wrong attempts.
    #[error("user PIN of PKCS#11 token {token_label:?} is locked")]
    PinLocked {
        /// The token's label.
        token_label: String,
    },

    /// The PKCS#11 module file does not exist.
    #[error("PKCS#11 module not found at {}", path.display())]
    ModuleMissing {
        /// The configured module path.
        path: PathBuf,
    },

    /// The PKCS#11 module exists but could not be loaded or initialised.
    #[error("PKCS#11 module {} could not be loaded or initialised: {reason}", path.display())]
    ModuleLoad {
        /// The configured module path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// No initialised token with this label is present in any slot.
    #[error("no PKCS#11 token labelled {label:?} is present")]
    TokenMissing {
        /// The configured token label.
        label: String,
    },

    /// More than one token has this label: refusing to guess.
    #[error("{count} PKCS#11 tokens are labelled {label:?}; labels must be unique")]
    TokenAmbiguous {
        /// The configured token label.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },

    /// The key-encryption key (or log-signing key) is absent and creating it is not allowed.
    #[error("{what} is absent and creating it is not allowed")]
    KekMissing {
        /// Which key: a PKCS#11 label or a software KEK file path.
        what: String,
    },

    /// More than one key on the token has this label: refusing to guess.
    #[error("{count} keys on the token are labelled {label:?}; labels must be unique")]
    KeyAmbiguous {
        /// The key label.
        label: String,
        /// How many keys carry it.
        count: usize,
    },

    /// An existing key on the token does not have the protection this crate requires
    /// (for example it is extractable, or not sensitive, or of the wrong type).
    #[error("key {label:?} on the token is unsuitable: {reason}")]
    KeyUnsuitable {
        /// The key label.
        label: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The software KEK metadata file is unreadable or malformed.
    #[error("software KEK metadata {} is invalid: {reason}", path.display())]
    KekMetadataInvalid {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A secret (passphrase, PIN) could not be obtained from its configured source.
    #[error("secret from {source_name} unavailable: {reason}")]
    SecretUnavailable {
        /// Where it was looked for (file path or environment variable name; never the value).
        source_name: String,
        /// Why it is unavailable.
        reason: String,
    },

    /// The token lacks a mechanism this backend needs.
    #[error("PKCS#11 token {token_label:?} does not support {mechanism}")]
    MechanismUnsupported {
        /// The token's label.
        token_label: String,
        /// The missing mechanism.
        mechanism: String,
    },

    /// A PKCS#11 call failed for a reason not covered by a more specific variant.
    #[error("PKCS#11 {operation} failed: {source}")]
    Pkcs11 {
        /// What this crate was doing.
        operation: &'static str,
        /// The error reported by the module.
        #[source]
        source: cryptoki::error::Error,
    },

    /// Invalid configuration or argument (caller error).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A cryptographic primitive failed unexpectedly (a bug or resource exhaustion).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),

    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl HsmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HsmError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn pkcs11(operation: &'static str, source: cryptoki::error::Error) -> Self {
        HsmError::Pkcs11 { operation, source }
    }
}
