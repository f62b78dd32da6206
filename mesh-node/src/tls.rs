//! TLS policy for peer connections: builds the rustls client and server configurations that
//! decide which peers a node talks to and which node id each one is. It opens no socket.
//!
//! In the cluster (mutual) mode both ends present a certificate chained to the cluster CA, and
//! the node id of a peer is the single DNS SAN of its certificate. A dialer that knows which node
//! it expects at an address passes that node id as the TLS server name and the handshake fails
//! on any other id; a dialer that does not (a seed address) passes [`ANY_NODE`] and learns the
//! id from the certificate. Only TLS 1.3, no session resumption (each connection re-verifies the
//! peer's certificate), ALPN [`ALPN`].

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use crate::certs::{self, CertError, TlsIdentity};

/// The ALPN protocol of statemesh peer connections; bumped on an incompatible wire change.
pub const ALPN: &[u8] = b"statemesh/1";

/// The server name a dialer uses when it does not know which node listens at an address.
///
/// It cannot collide with a node id, which never contains a '.'. The chain is still verified
/// against the CA; only the node id check is skipped, and the caller learns the id afterwards.
pub const ANY_NODE: &str = "any-node.statemesh.invalid";

/// Errors from building TLS configurations or reading a peer's identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate chain is empty.
    #[error("no certificate presented")]
    NoCertificate,
    /// A certificate cannot be parsed.
    #[error("unparsable certificate: {0}")]
    BadCertificate(String),
    /// A certificate does not carry exactly one DNS SAN that is a valid node id.
    #[error("certificate does not name a node: {0}")]
    NoNodeId(String),
    /// Certificate generation or node id validation failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused the configuration or a certificate.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA certificate cannot be used as a trust anchor.
    #[error("cluster CA: {0}")]
    Ca(#[from] rustls::client::VerifierBuilderError),
}

/// The crypto provider statemesh uses, explicitly, so no process-wide default is needed.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads the node id a certificate names: its one DNS SAN, which must be a valid node id.
///
/// This only reads; whether the certificate is trusted is the verifiers' business.
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut names = parsed.valid_dns_names();
    let id = names
        .next()
        .ok_or_else(|| TlsError::NoNodeId("no DNS subject alternative name".into()))?;
    if names.next().is_some() {
        return Err(TlsError::NoNodeId(
            "more than one DNS subject alternative name".into(),
        ));
    }
    certs::validate_node_id(id)?;
    Ok(id.to_owned())
}

/// Turns an identity problem into the rustls error that aborts the handshake with an alert.
fn reject(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

fn root_store(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    Ok(Arc::new(roots))
}

/// The server-side verifier of the cluster mode: the client's chain must reach one of `ca` and
/// its certificate must name a node.
pub(crate) fn client_cert_verifier(
    ca: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let inner =
        WebPkiClientVerifier::builder_with_provider(root_store(ca)?, crypto_provider()).build()?;
    Ok(Arc::new(NodeClientVerifier { inner }))
}

/// A node's TLS configuration for both roles, plus the node id its own certificate names.
///
/// Cheap to clone. Build it with [`TlsConfig::mutual`] in production, [`TlsConfig::insecure_dev`]
/// on a laptop.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    node_id: String,
    insecure: bool,
}

impl TlsConfig {
    /// Mutual TLS within the cluster: present `identity`'s certificate, and accept only peers
    /// whose certificate chains to `identity.ca` and names a node.
    pub fn mutual(identity: &TlsIdentity) -> Result<Self, TlsError> {
        let node_id = identity.node_id()?;
        let provider = crypto_provider();
        let server_verifier = WebPkiServerVerifier::builder_with_provider(
            root_store(&identity.ca)?,
            provider.clone(),
        )
        .build()?;
        let server_verifier = Arc::new(NodeServerVerifier {
            inner: server_verifier,
        });
        Self::build(
            identity.cert_chain.clone(),
            identity.key.clone_key(),
            client_cert_verifier(&identity.ca)?,
            server_verifier,
            node_id,
            false,
        )
    }

    /// **For local development only: no authentication at all.**
    ///
    /// Presents an ephemeral self-signed certificate naming `node_id` and accepts any peer
    /// certificate, so anyone who can reach the port can join the mesh and claim any node id.
    /// Traffic is still encrypted, but against an active attacker that means nothing. This is
    /// what `mesh-node run --insecure-dev` uses; never use it on a network you do not own.
    pub fn insecure_dev(node_id: &str) -> Result<Self, TlsError> {
        certs::validate_node_id(node_id)?;
        let mut params =
            rcgen::CertificateParams::new(vec![node_id.to_owned()]).map_err(CertError::from)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_id);
        let key = rcgen::KeyPair::generate().map_err(CertError::from)?;
        let cert = params.self_signed(&key).map_err(CertError::from)?;
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let algorithms = crypto_provider().signature_verification_algorithms;
        Self::build(
            vec![cert.der().clone()],
            key,
            Arc::new(AcceptAnyClient { algorithms }),
            Arc::new(AcceptAnyServer { algorithms }),
            node_id.to_owned(),
            true,
        )
    }

    fn build(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_verifier: Arc<dyn ClientCertVerifier>,
        server_verifier: Arc<dyn ServerCertVerifier>,
        node_id: String,
        insecure: bool,
    ) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(cert_chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(cert_chain, key)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = Resumption::disabled();

        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            node_id,
            insecure,
        })
    }

    /// The node id this node's own certificate names.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this is the unauthenticated [`TlsConfig::insecure_dev`] mode.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The rustls configuration for accepting peer connections.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The rustls configuration for dialing peers; the server name is the expected node id.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

/// Verifies a server: its certificate names a node, that node is the one the dialer expects
/// (unless it dialed [`ANY_NODE`]), and the chain reaches the cluster CA.
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = node_id_from_cert(end_entity).map_err(reject)?;
        let ServerName::DnsName(expected) = server_name else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        };
        // Exact comparison: DNS matching would ignore case, node ids do not.
        if expected.as_ref() != ANY_NODE && expected.as_ref() != presented {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: vec![presented],
                },
            ));
        }
        let name = ServerName::try_from(presented)
            .map_err(|e| reject(TlsError::NoNodeId(e.to_string())))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a client: its certificate names a node and its chain reaches the cluster CA.
#[derive(Debug)]
struct NodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NodeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_from_cert(end_entity).map_err(reject)?;
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Insecure-dev server verifier: accepts any certificate, checks only the handshake signature
/// (which proves the peer holds the key of the certificate it sent, nothing more).
#[derive(Debug)]
struct AcceptAnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Insecure-dev client verifier: requires a client certificate (to read a node id from), accepts
/// any.
#[derive(Debug)]
struct AcceptAnyClient {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AcceptAnyClient {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_node_is_not_a_node_id() {
        assert!(certs::validate_node_id(ANY_NODE).is_err());
        assert!(ServerName::try_from(ANY_NODE).is_ok());
    }

    #[test]
    fn insecure_dev_cert_names_its_node() {
        let tls = TlsConfig::insecure_dev("laptop-1").expect("insecure config");
        assert_eq!(tls.node_id(), "laptop-1");
        assert!(tls.is_insecure());
        assert!(TlsConfig::insecure_dev("not valid").is_err());
    }
}
