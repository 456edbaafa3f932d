//! The development CA and the certificates it issues (rcgen, ECDSA P-256).

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::DevkitError;
use crate::fsutil::{self, PUBLIC_MODE, SECRET_MODE};

fn cert_err(path: &Path) -> impl Fn(rcgen::Error) -> DevkitError + '_ {
    move |e| DevkitError::Cert {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The dev CA, loaded or freshly created.
pub(crate) struct DevCa {
    key: KeyPair,
    cert: Certificate,
    /// Whether it was created by this run (then every leaf must be reissued).
    pub(crate) fresh: bool,
}

fn ca_params(path: &Path) -> Result<CertificateParams, DevkitError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err(path))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Custos development");
    dn.push(DnType::CommonName, "Custos dev CA (do not trust)");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl DevCa {
    /// Loads `cert_path`/`key_path`, or creates both if either is missing.
    pub(crate) fn load_or_create(cert_path: &Path, key_path: &Path) -> Result<DevCa, DevkitError> {
        if cert_path.is_file() && key_path.is_file() {
            fsutil::restrict(key_path)?;
            let pem = fsutil::read_string(key_path)?;
            let key = KeyPair::from_pem(&pem).map_err(cert_err(key_path))?;
            // Re-derive an issuer object from the same subject and key: certificates it
            // signs chain to the CA certificate on disk (same name, same key identifier).
            let cert = ca_params(cert_path)?
                .self_signed(&key)
                .map_err(cert_err(cert_path))?;
            return Ok(DevCa {
                key,
                cert,
                fresh: false,
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err(key_path))?;
        let cert = ca_params(cert_path)?
            .self_signed(&key)
            .map_err(cert_err(cert_path))?;
        fsutil::write_atomic(key_path, key.serialize_pem().as_bytes(), SECRET_MODE)?;
        fsutil::write_atomic(cert_path, cert.pem().as_bytes(), PUBLIC_MODE)?;
        Ok(DevCa {
            key,
            cert,
            fresh: true,
        })
    }

    /// Issues a leaf certificate to `cert_path`/`key_path` unless both exist
    /// and the CA is not fresh.
    pub(crate) fn ensure_leaf(
        &self,
        cert_path: &Path,
        key_path: &Path,
        common_name: &str,
        sans: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<(), DevkitError> {
        if !self.fresh && cert_path.is_file() && key_path.is_file() {
            return fsutil::restrict(key_path);
        }
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(cert_err(cert_path))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Custos development");
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = usages.to_vec();
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err(key_path))?;
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_err(cert_path))?;
        fsutil::write_atomic(key_path, key.serialize_pem().as_bytes(), SECRET_MODE)?;
        fsutil::write_atomic(cert_path, cert.pem().as_bytes(), PUBLIC_MODE)
    }
}

/// Issues a client certificate (`ClientAuth`, common name and DNS name
/// `common_name`) from the cluster's dev CA into `cert`/`key`: what a
/// backend presents to a dev coordinator instead of a token, once pinned
/// with `custos token create --cert`. Fails if the cluster has no CA.
pub fn issue_client_certificate(
    layout: &crate::ClusterLayout,
    common_name: &str,
    cert: &Path,
    key: &Path,
) -> Result<(), DevkitError> {
    for p in [&layout.ca_cert, &layout.ca_key] {
        if !p.is_file() {
            return Err(DevkitError::Cert {
                path: p.clone(),
                message: "the cluster's CA is missing: run `custos dev up` first".into(),
            });
        }
    }
    let ca = DevCa::load_or_create(&layout.ca_cert, &layout.ca_key)?;
    let _ = std::fs::remove_file(cert);
    ca.ensure_leaf(cert, key, common_name, &[common_name], CLIENT)
}

/// Server certificate usages.
pub(crate) const SERVER: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ServerAuth];
/// Client certificate usages.
pub(crate) const CLIENT: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ClientAuth];
/// Both (a signer's control certificate is a server certificate; kept usable as a client too).
pub(crate) const SERVER_AND_CLIENT: &[ExtendedKeyUsagePurpose] = &[
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];
