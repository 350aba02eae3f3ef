//! TLS for the transport: each endpoint's self-signed identity, the rustls server and client
//! configurations (TLS 1.3 only, ring provider, ALPN `lumen/1`), and the client's certificate
//! verifier.
//!
//! Certificates are not what authenticates a peer — the cluster token does, bound to the TLS
//! channel by the handshake (see `handshake.rs`). The verifier therefore accepts any
//! certificate whose handshake signature checks out, records the certificate's fingerprint
//! (the handshake proofs cover it) and refuses a certificate that differs from one pinned for
//! the address being dialed.

use crate::error::Error;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The ALPN protocol both sides must speak.
pub(crate) const ALPN: &[u8] = b"lumen/1";
/// Name in every lumen certificate and the server name clients ask for.
pub(crate) const SERVER_NAME: &str = "lumen";

/// A fingerprint: blake3 of a certificate's DER encoding.
pub(crate) fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    *blake3::hash(cert_der).as_bytes()
}

/// A fingerprint as 64 hex digits (for error messages).
pub(crate) fn fingerprint_hex(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// An error setting up this endpoint's TLS.
fn tls_error(what: &str, e: impl fmt::Display) -> Error {
    Error::Connection {
        peer: "local endpoint".into(),
        reason: format!("cannot set up TLS ({what}): {e}"),
    }
}

/// The ring crypto provider, used explicitly (not the process default).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This endpoint's TLS identity: a fresh self-signed certificate and its key.
pub(crate) struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: [u8; 32],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &fingerprint_hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a new self-signed certificate for [`SERVER_NAME`].
    pub(crate) fn generate() -> Result<Identity, Error> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| tls_error("generating the self-signed certificate", e))?;
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
        let fingerprint = fingerprint(&cert);
        Ok(Identity {
            cert,
            key,
            fingerprint,
        })
    }

    /// Fingerprint of the certificate.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The QUIC server configuration presenting this identity.
    pub(crate) fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, Error> {
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("server protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| tls_error("server certificate", e))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| tls_error("QUIC server crypto", e))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport);
        Ok(config)
    }
}

/// What the verifier saw while dialing one address.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen {
    /// Fingerprint of the certificate the server presented.
    pub(crate) fingerprint: Option<[u8; 32]>,
    /// Set when the certificate differed from the pinned one: `(pinned, presented)`.
    pub(crate) mismatch: Option<([u8; 32], [u8; 32])>,
}

impl Seen {
    /// The error text for a pinning mismatch at `addr`, if there was one.
    pub(crate) fn mismatch_reason(&self, addr: SocketAddr) -> Option<String> {
        self.mismatch.map(|(pinned, got)| {
            format!(
                "the certificate presented at {addr} has fingerprint {}, but {} is pinned for that \
                 address: a different process is listening there (or the connection is being \
                 intercepted)",
                fingerprint_hex(&got),
                fingerprint_hex(&pinned)
            )
        })
    }
}

/// The client side's certificate verifier for one dial (see the module docs).
pub(crate) struct Verifier {
    pinned: Option<[u8; 32]>,
    seen: Arc<Mutex<Seen>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("pinned", &self.pinned.as_ref().map(fingerprint_hex))
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        let mut seen = self.seen.lock();
        seen.fingerprint = Some(got);
        match self.pinned {
            Some(pinned) if pinned != got => {
                seen.mismatch = Some((pinned, got));
                Err(rustls::Error::General(format!(
                    "certificate fingerprint {} differs from the pinned {}",
                    fingerprint_hex(&got),
                    fingerprint_hex(&pinned)
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "lumen speaks TLS 1.3 only; a TLS 1.2 signature was offered".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC client configuration for one dial: accepts any certificate except one differing from
/// `pinned`, and records what it saw in `seen`.
pub(crate) fn client_config(
    pinned: Option<[u8; 32]>,
    seen: Arc<Mutex<Seen>>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(Verifier {
        pinned,
        seen,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("client protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| tls_error("QUIC client crypto", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_and_fingerprint_is_blake3_of_der() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), *blake3::hash(&a.cert).as_bytes());
        assert_eq!(fingerprint_hex(&a.fingerprint()).len(), 64);
    }

    #[test]
    fn verifier_records_and_enforces_pins() {
        let id = Identity::generate().unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let check = |pinned: Option<[u8; 32]>| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let v = Verifier {
                pinned,
                seen: seen.clone(),
                provider: provider(),
            };
            let ok = v
                .verify_server_cert(&id.cert, &[], &name, &[], UnixTime::now())
                .is_ok();
            let seen = seen.lock().clone();
            (ok, seen)
        };
        let (ok, seen) = check(None);
        assert!(ok);
        assert_eq!(seen.fingerprint, Some(id.fingerprint()));
        let (ok, _) = check(Some(id.fingerprint()));
        assert!(ok);
        let (ok, seen) = check(Some([7; 32]));
        assert!(!ok);
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let reason = seen.mismatch_reason(addr).unwrap();
        assert!(reason.contains("pinned"), "{reason}");
        assert!(reason.contains(&fingerprint_hex(&id.fingerprint())));
    }

    #[test]
    fn configs_build() {
        let id = Identity::generate().unwrap();
        let transport = Arc::new(quinn::TransportConfig::default());
        id.server_config(transport.clone()).unwrap();
        client_config(None, Arc::default(), transport).unwrap();
    }
}
