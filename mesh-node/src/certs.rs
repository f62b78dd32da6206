//! Cluster certificate tooling: generates the cluster CA and per-node certificates, and loads a
//! node's TLS identity from PEM files. It never decides what a handshake accepts (see `tls`).
//!
//! A node certificate names its node id twice: as its only DNS subject alternative name (what
//! peers verify and read) and as its common name (what operators see in `openssl x509`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::{Duration, OffsetDateTime};

use crate::tls;

/// How long the cluster CA is valid: rotating a CA means re-issuing every node certificate.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How long a node certificate is valid.
const NODE_VALIDITY: Duration = Duration::days(5 * 365);
/// Backdating of `not_before`, so that a peer whose clock runs a little late accepts a fresh cert.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::days(1);

/// Errors from generating, writing or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A node id is not usable as a certificate name.
    #[error(
        "invalid node id {id:?}: {reason} (node ids are 1 to 63 characters of A-Z, a-z, 0-9 and '-', \
         not starting or ending with '-', and not all digits)"
    )]
    InvalidNodeId {
        /// The rejected id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same node id was given twice.
    #[error("node id {0:?} is listed twice")]
    DuplicateNodeId(String),
    /// The reserved names `ca` would overwrite the CA files.
    #[error("node id {0:?} is reserved: it would overwrite the CA files")]
    ReservedNodeId(String),
    /// rcgen refused to build a certificate or key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file holds no PEM item of the expected kind.
    #[error("{path}: no PEM {what} found (expected a file with '-----BEGIN {what}-----')")]
    NotPem {
        /// The file involved.
        path: PathBuf,
        /// The PEM label that was expected.
        what: &'static str,
    },
    /// The private key does not belong to the certificate.
    #[error("{key_path} does not match the certificate in {cert_path}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
        /// What rustls reported.
        reason: String,
    },
    /// The certificate is not signed by the given CA, or is not a valid node certificate.
    #[error("{cert_path} is not a valid node certificate of the CA in {ca_path}: {reason}")]
    NotIssuedByCa {
        /// The certificate file.
        cert_path: PathBuf,
        /// The CA file.
        ca_path: PathBuf,
        /// What the verifier reported.
        reason: String,
    },
}

/// Checks that `id` can be a node id, and so a DNS name in a certificate SAN.
///
/// The rules are those of a single DNS label, minus what rustls would refuse as a server name
/// (a leading or trailing '-', an all-digit label that looks like an IPv4 address).
pub fn validate_node_id(id: &str) -> Result<(), CertError> {
    let invalid = |reason| {
        Err(CertError::InvalidNodeId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("it is empty");
    }
    if id.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return invalid("it contains a character other than A-Z, a-z, 0-9 and '-'");
    }
    if id.starts_with('-') || id.ends_with('-') {
        return invalid("it starts or ends with '-'");
    }
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("it is all digits");
    }
    Ok(())
}

/// The files [`write_cluster_certs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCertFiles {
    /// `DIR/ca.pem`, the CA certificate every node trusts.
    pub ca_cert: PathBuf,
    /// `DIR/ca.key`, the CA private key: keep it offline once the nodes have their certificates.
    pub ca_key: PathBuf,
    /// Per node, in the order given: `(node id, DIR/ID.pem, DIR/ID.key)`.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

/// Generates a fresh cluster CA and one certificate per node id, and writes them as PEM into
/// `out_dir` (created if missing): `ca.pem`, `ca.key`, and `ID.pem`, `ID.key` per node.
///
/// All node ids are validated before anything is written. Key files are created with mode 0600
/// on unix. Existing files of the same names are overwritten.
pub fn write_cluster_certs(
    out_dir: &Path,
    node_ids: &[impl AsRef<str>],
) -> Result<ClusterCertFiles, CertError> {
    let mut seen = std::collections::HashSet::new();
    for id in node_ids {
        let id = id.as_ref();
        validate_node_id(id)?;
        if id.eq_ignore_ascii_case("ca") {
            return Err(CertError::ReservedNodeId(id.to_owned()));
        }
        // Case-insensitively, since DNS names (and file names on some systems) are.
        if !seen.insert(id.to_ascii_lowercase()) {
            return Err(CertError::DuplicateNodeId(id.to_owned()));
        }
    }

    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        path: out_dir.to_owned(),
        source,
    })?;

    let (ca_pem, ca_issuer) = generate_ca()?;
    let files = ClusterCertFiles {
        ca_cert: out_dir.join("ca.pem"),
        ca_key: out_dir.join("ca.key"),
        nodes: Vec::with_capacity(node_ids.len()),
    };
    write_file(&files.ca_cert, ca_pem.as_bytes(), false)?;
    write_file(
        &files.ca_key,
        ca_issuer.key().serialize_pem().as_bytes(),
        true,
    )?;

    let mut files = files;
    for id in node_ids {
        let id = id.as_ref();
        let (cert_pem, key_pem) = generate_node_cert(id, &ca_issuer)?;
        let cert_path = out_dir.join(format!("{id}.pem"));
        let key_path = out_dir.join(format!("{id}.key"));
        write_file(&cert_path, cert_pem.as_bytes(), false)?;
        write_file(&key_path, key_pem.as_bytes(), true)?;
        files.nodes.push((id.to_owned(), cert_path, key_path));
    }
    Ok(files)
}

/// Builds the self-signed cluster CA; returns its certificate PEM and the issuer that signs nodes.
fn generate_ca() -> Result<(String, Issuer<'static, KeyPair>), CertError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    // A name unique to this CA: a certificate from another statemesh cluster's CA is then
    // refused as "unknown issuer", not as a bad signature from a namesake.
    let cluster_tag = {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i128(now.unix_timestamp_nanos());
        hasher.finish()
    };
    params.distinguished_name.push(
        DnType::CommonName,
        format!("statemesh cluster CA {cluster_tag:016x}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "statemesh");
    // Path length 0: the CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// Builds a node certificate (server and client auth) signed by the CA; returns (cert, key) PEM.
fn generate_node_cert(
    node_id: &str,
    ca: &Issuer<'static, KeyPair>,
) -> Result<(String, String), CertError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(vec![node_id.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "statemesh");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node dials and accepts, so its one certificate serves both TLS roles.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + NODE_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `contents` to `path`; private keys are created readable by the owner only.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err)?;
    // `mode` applies only when the file is created: tighten a pre-existing key file too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    io::Write::write_all(&mut file, contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// A node's TLS identity: its certificate chain and key, and the cluster CA(s) it trusts.
///
/// [`TlsIdentity::load`] checks the three belong together; the fields are public so that tests
/// can assemble deliberately inconsistent identities (a foreign certificate, say).
pub struct TlsIdentity {
    /// The node certificate first, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
    /// The trusted cluster CA certificates (several during a CA rotation).
    pub ca: Vec<CertificateDer<'static>>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_id", &self.node_id().ok())
            .field("cert_chain_len", &self.cert_chain.len())
            .field("ca_len", &self.ca.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads and cross-checks a node identity from PEM files: the node certificate (chain), its
    /// private key, and the cluster CA bundle.
    ///
    /// Fails with a message naming the file if one is missing or holds no PEM of the right kind,
    /// if the key does not match the certificate, or if the certificate is not a node
    /// certificate of that CA (so a misconfigured node fails at start-up, not at its first peer).
    pub fn load(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Self, CertError> {
        let cert_chain = read_certs(cert_path)?;
        let key = read_key(key_path)?;
        let ca = read_certs(ca_path)?;
        let identity = Self {
            cert_chain,
            key,
            ca,
        };

        let provider = tls::crypto_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(|e| CertError::KeyMismatch {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                reason: format!("unusable key: {e}"),
            })?;
        rustls::sign::CertifiedKey::new(identity.cert_chain.clone(), signing_key)
            .keys_match()
            .map_err(|e| CertError::KeyMismatch {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                reason: e.to_string(),
            })?;

        identity
            .verify_against_ca()
            .map_err(|e| CertError::NotIssuedByCa {
                cert_path: cert_path.to_owned(),
                ca_path: ca_path.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(identity)
    }

    /// The node id named by this identity's certificate.
    pub fn node_id(&self) -> Result<String, tls::TlsError> {
        let cert = self
            .cert_chain
            .first()
            .ok_or(tls::TlsError::NoCertificate)?;
        tls::node_id_from_cert(cert)
    }

    /// Checks the certificate chains to one of the CAs and carries a valid node id.
    fn verify_against_ca(&self) -> Result<(), tls::TlsError> {
        self.node_id()?;
        let verifier = tls::client_cert_verifier(&self.ca)?;
        let (end_entity, intermediates) = self
            .cert_chain
            .split_first()
            .ok_or(tls::TlsError::NoCertificate)?;
        verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(tls::TlsError::Rustls)?;
        Ok(())
    }
}

/// Reads every certificate in a PEM file; fails if there is none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertError::NotPem {
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| CertError::NotPem {
            path: path.to_owned(),
            what: "PRIVATE KEY",
        })
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rules() {
        for ok in ["a", "node-1", "eu-west-1a", "N0DE", &"x".repeat(63), "1a"] {
            assert!(validate_node_id(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            &"x".repeat(64),
            "-a",
            "a-",
            "a.b",
            "a_b",
            "123",
            "ñ",
            "a b",
        ] {
            assert!(validate_node_id(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn writes_exactly_the_cluster_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let files = write_cluster_certs(&out, &["node-a", "node-b"]).expect("certs");
        let mut names: Vec<_> = fs::read_dir(&out)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ca.key",
                "ca.pem",
                "node-a.key",
                "node-a.pem",
                "node-b.key",
                "node-b.pem"
            ]
        );
        assert_eq!(files.nodes.len(), 2);
        #[cfg(unix)]
        for key in [&files.ca_key, &files.nodes[0].2, &files.nodes[1].2] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }

        let identity =
            TlsIdentity::load(&files.nodes[1].1, &files.nodes[1].2, &files.ca_cert).expect("load");
        assert_eq!(identity.node_id().expect("node id"), "node-b");
        // Once as the DNS SAN, once as the common name.
        assert_eq!(occurrences(&identity.cert_chain[0], b"node-b"), 2);
    }

    #[test]
    fn refuses_bad_node_lists_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad_lists: [&[&str]; 3] = [&["ok", "not ok"], &["a", "A"], &["ca"]];
        for ids in bad_lists {
            assert!(write_cluster_certs(dir.path(), ids).is_err(), "{ids:?}");
        }
        assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 0);
    }

    #[test]
    fn load_explains_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let files = write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
        let foreign = write_cluster_certs(other.path(), &["node-a"]).expect("certs");
        let (_, a_cert, a_key) = &files.nodes[0];
        let (_, _, b_key) = &files.nodes[1];
        let ca = &files.ca_cert;

        let missing = dir.path().join("missing.pem");
        let err = TlsIdentity::load(&missing, a_key, ca).expect_err("missing file");
        assert!(
            matches!(err, CertError::Io { ref path, .. } if *path == missing),
            "{err}"
        );

        let err = TlsIdentity::load(a_key, a_key, ca).expect_err("key as cert");
        assert!(
            matches!(
                err,
                CertError::NotPem {
                    what: "CERTIFICATE",
                    ..
                }
            ),
            "{err}"
        );
        let err = TlsIdentity::load(a_cert, a_cert, ca).expect_err("cert as key");
        assert!(
            matches!(
                err,
                CertError::NotPem {
                    what: "PRIVATE KEY",
                    ..
                }
            ),
            "{err}"
        );

        let err = TlsIdentity::load(a_cert, b_key, ca).expect_err("wrong key");
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("node-b.key"), "{err}");

        let err = TlsIdentity::load(&foreign.nodes[0].1, &foreign.nodes[0].2, ca)
            .expect_err("foreign CA");
        assert!(matches!(err, CertError::NotIssuedByCa { .. }), "{err}");
    }

    #[test]
    fn every_valid_node_id_is_a_rustls_server_name() {
        for id in ["a", "node-1", "1a", "Z9-z"] {
            assert!(rustls::pki_types::ServerName::try_from(id).is_ok(), "{id}");
        }
    }
}
