//! The mesh's signing CA: an intermediate whose key ecs-xds holds, issuing short-lived
//! certificates to tasks and to ecs-xds's own listeners.
//!
//! A task's CSR is untrusted input, so nothing in it reaches a certificate but its public key:
//! the name, the key usages, the lifetime and every extension are built here. The CSR is only
//! read to refuse it (a bad signature, a request to be a CA, a name other than the one the task
//! proved, a key that is not P-256), so a refusal says what the task did wrong.
//!
//! Loading checks everything that would otherwise surface later as a TLS failure at a peer:
//! that the key is the certificate's, that the certificate may sign, that the chain leads to a
//! root of the trust bundle, and that the names rcgen writes as the issuer are byte for byte the
//! CA's subject (a verifier matches them exactly).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, DnsName};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::spiffe::{self, SpiffeError, SpiffeId};

/// How far back a certificate's validity starts, so a peer whose clock is a little behind
/// ecs-xds's does not see it as not yet valid.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const ROOT_VALIDITY: Duration = Duration::from_secs(3650 * DAY.as_secs());
const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(365 * DAY.as_secs());
/// X.509's upper bound (ub-common-name, ub-organization-name; ub-locality-name is larger) on
/// the name attributes we write.
const MAX_NAME_ATTRIBUTE: usize = 64;

/// The CA in force: the intermediate's key and certificate, the chain to hand out with every
/// certificate and the roots peers trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    chain_pem: String,
    bundle_pem: String,
    not_after: SystemTime,
    trust_domain: String,
}

/// A workload certificate, ready to send: the chain ends below the root, which the task gets
/// in the trust bundle instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The leaf, then the CA's chain.
    pub chain_pem: String,
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex: what an operator greps logs for.
    pub serial_hex: String,
}

/// A listener certificate with its key. Its `Debug` leaves the key out.
#[derive(Clone)]
pub struct ServerCert {
    /// The leaf, then the CA's chain.
    pub chain_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// What `ecs-xds ca init` writes. Its `Debug` leaves the keys out.
#[derive(Clone)]
pub struct InitFiles {
    pub root_pem: String,
    pub root_key_pem: String,
    pub intermediate_pem: String,
    pub intermediate_key_pem: String,
}

/// Why a CA cannot be loaded, made or used; each says what to fix. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the trust domain is invalid: {0}")]
    TrustDomain(#[from] SpiffeError),
    #[error("the CA key is not a PKCS#8 PEM private key ecs-xds can sign with: {0}")]
    Key(String),
    #[error("the {what} is not PEM certificates: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("no certificate in the CA chain")]
    EmptyChain,
    #[error("no certificate in the trust bundle")]
    EmptyBundle,
    #[error("certificate {index} of the {what} is not an X.509 certificate: {detail}")]
    Certificate {
        what: &'static str,
        index: usize,
        detail: String,
    },
    #[error("the CA chain's first certificate is not a CA")]
    NotCa,
    #[error("the CA chain's first certificate may not sign certificates (its key usage lacks keyCertSign)")]
    MayNotSign,
    #[error("the key does not match the CA certificate")]
    KeyMismatch,
    #[error("the CA certificate expired on {0}")]
    Expired(String),
    #[error(
        "certificate {0} of the CA chain is not issued by the one after it: give the CA's \
         certificate first, then each issuer in turn, without the root"
    )]
    ChainOrder(usize),
    #[error("the CA chain does not lead to a root of the trust bundle: no root issued its last certificate")]
    NotUnderBundle,
    #[error("the CA certificate cannot be read as an issuer: {0}")]
    Unreadable(String),
    #[error(
        "the CA certificate's subject cannot be copied exactly into the certificates it issues, \
         so they would not chain to it; reissue it with one attribute per name component, each \
         a UTF8String or PrintableString"
    )]
    SubjectNotReproducible,
    #[error("`{0}` is not a DNS name, IP address or URI a server certificate can hold")]
    ServerName(String),
    #[error("making a certificate failed: {0}")]
    Sign(String),
}

/// Why a CSR is refused. [`CsrError::reason`] is its metric label.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the CSR is malformed: {0}")]
    Malformed(String),
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    #[error("the CSR asks for a CA certificate (basicConstraints CA:TRUE)")]
    AsksForCa,
    #[error("the CSR asks for a name other than the task's SPIFFE ID: {0}")]
    ForeignName(String),
    #[error(
        "the CSR's key is not usable: {0}; ecs-xds takes ECDSA P-256 keys signing with \
         ecdsa-with-SHA256"
    )]
    UnsupportedKey(String),
    /// The CSR is fine but the CA cannot sign it (it expired, or the ID is not in its trust
    /// domain): ecs-xds's fault, not the task's.
    #[error("the CA cannot issue this certificate: {0}")]
    CannotIssue(String),
}

impl CsrError {
    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            CsrError::Malformed(_) => "csr_malformed",
            CsrError::BadSignature => "csr_signature",
            CsrError::AsksForCa => "csr_asks_for_ca",
            CsrError::ForeignName(_) => "csr_foreign_name",
            CsrError::UnsupportedKey(_) => "csr_key_type",
            CsrError::CannotIssue(_) => "ca_cannot_issue",
        }
    }
}

/// The span a certificate is valid for, in whole seconds as X.509 writes it.
#[derive(Debug, Clone, Copy)]
struct Window {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Ca {
    /// key_pem: the intermediate's private key (PKCS#8 PEM); chain_pem: the intermediate's
    /// certificate first, then any further intermediates (no root); bundle_pem: the trusted
    /// roots (during a CA change, old and new roots both).
    pub fn from_pem(
        key_pem: &str,
        chain_pem: &str,
        bundle_pem: &str,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        spiffe::check_trust_domain(trust_domain)?;
        let key = KeyPair::from_pem(key_pem).map_err(key_error)?;
        let chain_der = certificates(chain_pem, "CA chain")?;
        let bundle_der = certificates(bundle_pem, "trust bundle")?;
        let chain = parse_all(&chain_der, "CA chain")?;
        let roots = parse_all(&bundle_der, "trust bundle")?;
        let ca_cert = chain.first().ok_or(CaError::EmptyChain)?;
        if roots.is_empty() {
            return Err(CaError::EmptyBundle);
        }
        check_signer(ca_cert, &key)?;
        check_chain(&chain, &roots)?;
        let ca = Ca {
            issuer: Issuer::from_ca_cert_der(&chain_der[0], key)
                .map_err(|e| CaError::Unreadable(e.to_string()))?,
            chain_pem: chain_pem.to_owned(),
            bundle_pem: bundle_pem.to_owned(),
            not_after: system_time(ca_cert.validity().not_after),
            trust_domain: trust_domain.to_owned(),
        };
        ca.check_issues_under(ca_cert)?;
        Ok(ca)
    }

    /// The intermediates, as given.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The roots, as given.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The CA certificate's expiry: no certificate it issues outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a workload certificate for `id` from the CSR, naming `zone` (the availability
    /// zone ECS says the task runs in, when it says one) as the subject's localityName. Only
    /// the CSR's public key is used: every extension and name is built here, never copied.
    /// Refuses a CSR whose self-signature does not verify, that asks for a CA (basicConstraints
    /// CA), that requests any SAN other than `id` itself, or whose key is not ECDSA P-256.
    pub fn issue_workload(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        zone: Option<&str>,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Issued, CsrError> {
        let der = csr_der(csr_pem)?;
        let csr = read_csr(&der)?;
        check_key(&parse_csr(&der)?.certification_request_info.subject_pki)?;
        check_key_algorithm(&csr)?;
        check_request(&csr.params, id)?;
        let uri = self.workload_uri(id).map_err(CsrError::CannotIssue)?;
        let window = self
            .window(validity, now)
            .ok_or_else(|| CsrError::CannotIssue(self.expired().to_string()))?;
        let serial = random_serial();
        let params = leaf_params(
            workload_subject(id, zone),
            vec![SanType::URI(uri)],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            window,
            &serial,
        );
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CsrError::CannotIssue(e.to_string()))?;
        Ok(Issued {
            chain_pem: self.with_chain(cert.pem()),
            not_after: window.not_after,
            serial_hex: hex(&serial),
        })
    }

    /// A certificate for ecs-xds's own listeners (xDS, identity endpoint): a fresh P-256 key
    /// made here, DNS SANs `dns_names` (IP literals such as "127.0.0.1" become IP SANs, which
    /// is what a client dialing an address matches), plus the URI SAN `uri`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        uri: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<ServerCert, CaError> {
        let window = self.window(validity, now).ok_or_else(|| self.expired())?;
        let mut sans = dns_names
            .iter()
            .map(|name| server_name(name))
            .collect::<Result<Vec<_>, _>>()?;
        sans.push(server_uri(uri)?);
        let common_name = dns_names.first().map_or("ecs-xds", String::as_str);
        let key = p256_key()?;
        let params = leaf_params(
            subject(&self.trust_domain, common_name),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            window,
            &random_serial(),
        );
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_error)?;
        Ok(ServerCert {
            chain_pem: self.with_chain(cert.pem()),
            key_pem: key.serialize_pem(),
            not_after: window.not_after,
        })
    }

    /// The ID as a URI SAN, if this CA may name it: re-checked here because the fields of a
    /// `SpiffeId` are public, and a CA must never sign for another trust domain.
    fn workload_uri(&self, id: &SpiffeId) -> Result<Ia5String, String> {
        let uri = id.to_string();
        match SpiffeId::parse(&uri) {
            Ok(parsed) if parsed == *id => {}
            Ok(_) => return Err(format!("`{uri}` does not read back as the same SPIFFE ID")),
            Err(e) => return Err(format!("`{uri}` is not a valid SPIFFE ID: {e}")),
        }
        if id.trust_domain != self.trust_domain {
            return Err(format!(
                "{uri} is outside the CA's trust domain {}",
                self.trust_domain
            ));
        }
        Ia5String::try_from(uri).map_err(|e| e.to_string())
    }

    /// From `now` less the clock skew to `now + validity`, cut at the CA's own expiry; `None`
    /// once the CA has expired.
    fn window(&self, validity: Duration, now: SystemTime) -> Option<Window> {
        let now = whole_seconds(now);
        if now >= self.not_after {
            return None;
        }
        let wanted = now.checked_add(validity).map(whole_seconds);
        Some(Window {
            not_before: now.checked_sub(CLOCK_SKEW).unwrap_or(now),
            not_after: wanted.map_or(self.not_after, |t| t.min(self.not_after)),
        })
    }

    fn expired(&self) -> CaError {
        CaError::Expired(show(self.not_after))
    }

    fn with_chain(&self, mut leaf_pem: String) -> String {
        if !leaf_pem.ends_with('\n') {
            leaf_pem.push('\n');
        }
        leaf_pem.push_str(&self.chain_pem);
        leaf_pem
    }

    /// rcgen writes the issuer name from its own reading of the CA's subject; a verifier
    /// matches it against the CA certificate byte for byte. One trial certificate shows now,
    /// rather than at every peer later, whether the two are the same.
    fn check_issues_under(&self, ca_cert: &X509Certificate) -> Result<(), CaError> {
        let key = p256_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let trial = params.signed_by(&key, &self.issuer).map_err(sign_error)?;
        let (_, trial) = X509Certificate::from_der(trial.der())
            .map_err(|e| CaError::Sign(format!("the trial certificate does not parse: {e}")))?;
        match trial.issuer().as_raw() == ca_cert.subject().as_raw() {
            true => Ok(()),
            false => Err(CaError::SubjectNotReproducible),
        }
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &show(self.not_after))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"[elided]")
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl fmt::Debug for InitFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitFiles")
            .field("root_pem", &self.root_pem)
            .field("root_key_pem", &"[elided]")
            .field("intermediate_pem", &self.intermediate_pem)
            .field("intermediate_key_pem", &"[elided]")
            .finish()
    }
}

/// sha256 of the CSR's SubjectPublicKeyInfo (DER), lowercase hex: what the task's signed proof
/// carries, binding the proof to this key. Does not verify the CSR's signature
/// ([`Ca::issue_workload`] does).
pub fn key_sha256_hex(csr_pem: &str) -> Result<String, CsrError> {
    let der = csr_der(csr_pem)?;
    let csr = parse_csr(&der)?;
    Ok(hex(&Sha256::digest(
        csr.certification_request_info.subject_pki.raw,
    )))
}

/// `ecs-xds ca init`: a new root (10 years) and an intermediate under it (1 year, pathlen 0),
/// both P-256, for a first try. In production the root's key belongs offline.
pub fn init(trust_domain: &str, now: SystemTime) -> Result<InitFiles, CaError> {
    spiffe::check_trust_domain(trust_domain)?;
    // A random tag keeps a second `init` (a CA change) from making a root with the same name
    // as the first, which verifiers would have to tell apart by key alone.
    let tag = hex(&fastrand::u32(..).to_be_bytes());
    let root_params = ca_params(
        subject(trust_domain, &format!("ecs-xds root CA {tag}")),
        BasicConstraints::Unconstrained,
        init_window(now, ROOT_VALIDITY),
    );
    let intermediate_params = ca_params(
        subject(trust_domain, &format!("ecs-xds intermediate CA {tag}")),
        BasicConstraints::Constrained(0),
        init_window(now, INTERMEDIATE_VALIDITY),
    );
    let root = CertifiedIssuer::self_signed(root_params, p256_key()?).map_err(sign_error)?;
    let intermediate =
        CertifiedIssuer::signed_by(intermediate_params, p256_key()?, &root).map_err(sign_error)?;
    Ok(InitFiles {
        root_pem: root.pem(),
        root_key_pem: root.key().serialize_pem(),
        intermediate_pem: intermediate.pem(),
        intermediate_key_pem: intermediate.key().serialize_pem(),
    })
}

fn p256_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign_error)
}

fn init_window(now: SystemTime, validity: Duration) -> Window {
    let now = whole_seconds(now);
    Window {
        not_before: now.checked_sub(CLOCK_SKEW).unwrap_or(now),
        not_after: now + validity,
    }
}

fn ca_params(
    dn: DistinguishedName,
    constraints: BasicConstraints,
    window: Window,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = window.not_before.into();
    params.not_after = window.not_after.into();
    params
}

/// An end-entity certificate's content, all of it: nothing else reaches the certificate.
fn leaf_params(
    dn: DistinguishedName,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    window: Window,
    serial: &[u8],
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = window.not_before.into();
    params.not_after = window.not_after.into();
    params
}

/// O = the trust domain, CN = `common_name`. A value past X.509's 64-character bound is left
/// out rather than cut (a cut name would be another name); the URI SAN is the identity anyway.
fn subject(trust_domain: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in [
        (DnType::OrganizationName, trust_domain),
        (DnType::CommonName, common_name),
    ] {
        if value.len() <= MAX_NAME_ATTRIBUTE {
            dn.push(ty, value);
        }
    }
    dn
}

/// A workload's subject: [`subject`], and L = the task's zone when ECS named one. A verified
/// stream's zone is read from it (`serve/peer.rs`), so only what ecs-xds attested goes in.
fn workload_subject(id: &SpiffeId, zone: Option<&str>) -> DistinguishedName {
    let mut dn = subject(&id.trust_domain, &id.service);
    let zone = zone.filter(|z| !z.is_empty() && z.len() <= MAX_NAME_ATTRIBUTE);
    if let Some(zone) = zone {
        dn.push(DnType::LocalityName, zone);
    }
    dn
}

/// 16 random bytes, the first bit clear so the DER integer is positive and the second set so
/// it is never zero nor encoded shorter. Serials need to be unique, not secret: with SHA-256
/// signatures their unpredictability is no longer what stops a collision attack.
fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    fastrand::fill(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

fn server_name(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || CaError::ServerName(name.to_owned());
    DnsName::try_from(name).map_err(|_| invalid())?;
    Ia5String::try_from(name)
        .map(SanType::DnsName)
        .map_err(|_| invalid())
}

fn server_uri(uri: &str) -> Result<SanType, CaError> {
    let invalid = || CaError::ServerName(uri.to_owned());
    if uri.is_empty() || uri.contains(char::is_whitespace) || !uri.contains(':') {
        return Err(invalid());
    }
    Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|_| invalid())
}

/// The CA key's error, without the pem crate's detail: a base64 error names a byte of the key.
fn key_error(e: rcgen::Error) -> CaError {
    CaError::Key(match e {
        rcgen::Error::PemError(_) => "it is not valid PEM".to_owned(),
        other => other.to_string(),
    })
}

fn sign_error(e: rcgen::Error) -> CaError {
    CaError::Sign(e.to_string())
}

fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem {
            what,
            detail: e.to_string(),
        })
}

fn parse_all<'a>(
    ders: &'a [CertificateDer<'_>],
    what: &'static str,
) -> Result<Vec<X509Certificate<'a>>, CaError> {
    let parse = |(index, der): (usize, &'a CertificateDer<'_>)| {
        X509Certificate::from_der(der)
            .map(|(_, cert)| cert)
            .map_err(|e| CaError::Certificate {
                what,
                index,
                detail: e.to_string(),
            })
    };
    ders.iter().enumerate().map(parse).collect()
}

/// The CA certificate may sign, with this key, today.
fn check_signer(cert: &X509Certificate, key: &KeyPair) -> Result<(), CaError> {
    if !cert.is_ca() {
        return Err(CaError::NotCa);
    }
    let usage = cert
        .key_usage()
        .map_err(|e| CaError::Unreadable(e.to_string()))?;
    if usage.is_some_and(|u| !u.value.key_cert_sign()) {
        return Err(CaError::MayNotSign);
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::KeyMismatch);
    }
    let not_after = system_time(cert.validity().not_after);
    if not_after <= SystemTime::now() {
        return Err(CaError::Expired(show(not_after)));
    }
    Ok(())
}

/// Each chain certificate is issued by the next, and the last by a root of the bundle: what a
/// peer will check, checked before any certificate goes out.
fn check_chain(chain: &[X509Certificate], roots: &[X509Certificate]) -> Result<(), CaError> {
    if let Some(i) = (1..chain.len()).find(|&i| !issued_by(&chain[i - 1], &chain[i])) {
        return Err(CaError::ChainOrder(i - 1));
    }
    let last = chain.last().ok_or(CaError::EmptyChain)?;
    match roots.iter().any(|root| issued_by(last, root)) {
        true => Ok(()),
        false => Err(CaError::NotUnderBundle),
    }
}

fn issued_by(cert: &X509Certificate, issuer: &X509Certificate) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn csr_der(csr_pem: &str) -> Result<CertificateSigningRequestDer<'static>, CsrError> {
    // The PEM error is not passed on: it would quote the input back.
    CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| CsrError::Malformed("no readable PEM CERTIFICATE REQUEST block".into()))
}

fn parse_csr<'a>(der: &'a [u8]) -> Result<X509CertificationRequest<'a>, CsrError> {
    match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => Ok(csr),
        Ok(_) => Err(CsrError::Malformed(
            "data after the certificate request".into(),
        )),
        Err(e) => Err(CsrError::Malformed(format!(
            "not a PKCS#10 certificate request: {e}"
        ))),
    }
}

/// rcgen's reading of the CSR, which verifies its signature first.
fn read_csr(
    der: &CertificateSigningRequestDer<'_>,
) -> Result<CertificateSigningRequestParams, CsrError> {
    CertificateSigningRequestParams::from_der(der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => CsrError::BadSignature,
        rcgen::Error::UnsupportedSignatureAlgorithm => {
            CsrError::UnsupportedKey("its signature algorithm is not one ecs-xds reads".into())
        }
        rcgen::Error::InvalidNameType => {
            CsrError::ForeignName("a subject alternative name of an unsupported type".into())
        }
        rcgen::Error::UnsupportedExtension => CsrError::Malformed(
            "it requests an extension other than subjectAltName, keyUsage, extendedKeyUsage \
             and basicConstraints"
                .into(),
        ),
        other => CsrError::Malformed(other.to_string()),
    })
}

/// id-ecPublicKey on prime256v1, and nothing else.
fn check_key(spki: &SubjectPublicKeyInfo) -> Result<(), CsrError> {
    let algorithm = &spki.algorithm;
    if algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        let name = oid_name(&algorithm.algorithm);
        return Err(CsrError::UnsupportedKey(format!("it is a {name} key")));
    }
    let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    match curve {
        Some(curve) if curve == OID_EC_P256 => Ok(()),
        Some(curve) => Err(CsrError::UnsupportedKey(format!(
            "it is on the curve {}",
            oid_name(&curve)
        ))),
        None => Err(CsrError::UnsupportedKey("it names no named curve".into())),
    }
}

/// rcgen takes the key's algorithm from the CSR's signature algorithm and writes the
/// certificate's key info from it: a P-256 key that signed with SHA-384 would come out as a
/// P-384 key. Only ecdsa-with-SHA256 gives back the key as sent.
fn check_key_algorithm(csr: &CertificateSigningRequestParams) -> Result<(), CsrError> {
    match csr.public_key.algorithm() == &PKCS_ECDSA_P256_SHA256 {
        true => Ok(()),
        false => Err(CsrError::UnsupportedKey(
            "it is signed with another algorithm".into(),
        )),
    }
}

/// The requested content is read only to refuse: a CA, or any name but `id`.
/// The checks of a CSR that need no identity (its signature, its key, no CA, no name but a URI),
/// so that a request that could never be issued is refused before any STS or ECS call.
/// [`Ca::issue_workload`] checks it again, with the name it may hold.
pub fn check_csr(csr_pem: &str) -> Result<(), CsrError> {
    let der = csr_der(csr_pem)?;
    let csr = read_csr(&der)?;
    check_key(&parse_csr(&der)?.certification_request_info.subject_pki)?;
    check_key_algorithm(&csr)?;
    if matches!(csr.params.is_ca, IsCa::Ca(_)) {
        return Err(CsrError::AsksForCa);
    }
    match (csr.params.subject_alt_names.iter()).find(|san| !matches!(san, SanType::URI(_))) {
        Some(san) => Err(CsrError::ForeignName(describe(san))),
        None => Ok(()),
    }
}

fn check_request(requested: &CertificateParams, id: &SpiffeId) -> Result<(), CsrError> {
    if matches!(requested.is_ca, IsCa::Ca(_)) {
        return Err(CsrError::AsksForCa);
    }
    let uri = id.to_string();
    let foreign = requested.subject_alt_names.iter().find(|san| match san {
        SanType::URI(requested) => requested.as_str() != uri,
        _ => true,
    });
    match foreign {
        Some(san) => Err(CsrError::ForeignName(describe(san))),
        None => Ok(()),
    }
}

fn describe(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => format!("the URI `{uri}`"),
        SanType::DnsName(name) => format!("the DNS name `{name}`"),
        SanType::IpAddress(ip) => format!("the IP address {ip}"),
        SanType::Rfc822Name(email) => format!("the email address `{email}`"),
        _ => "a name of another type".to_owned(),
    }
}

fn oid_name(oid: &Oid) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map_or_else(|_| oid.to_id_string(), str::to_owned)
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = Duration::from_secs(t.timestamp().unsigned_abs());
    match t.timestamp() >= 0 {
        true => UNIX_EPOCH + secs,
        false => UNIX_EPOCH.checked_sub(secs).unwrap_or(UNIX_EPOCH),
    }
}

/// A time as an operator reads it in an error: RFC 2822, UTC.
fn show(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let asn1 = i64::try_from(secs)
        .ok()
        .and_then(|s| ASN1Time::from_timestamp(s).ok());
    match asn1 {
        Some(time) => time.to_rfc2822().unwrap_or_else(|_| time.to_string()),
        None => format!("{secs} seconds after 1970"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    const TD: &str = "mesh.example";
    const HOUR: Duration = Duration::from_secs(3600);
    const SERVER_URI: &str = "spiffe://mesh.example/ecs-xds";

    struct Fixture {
        files: InitFiles,
        ca: Ca,
        now: SystemTime,
    }

    impl Fixture {
        /// A CA made by `init` a moment ago, loaded as ecs-xds loads it.
        fn new() -> Fixture {
            let now = SystemTime::now();
            let files = init(TD, now).unwrap();
            let ca = load(&files, &files.root_pem).unwrap();
            Fixture { files, ca, now }
        }

        fn issue(&self, csr: &str, id: &SpiffeId) -> Result<Issued, CsrError> {
            self.ca.issue_workload(csr, id, None, HOUR, self.now)
        }

        fn server(&self, names: &[&str], uri: &str) -> Result<ServerCert, CaError> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            self.ca.issue_server(&names, uri, HOUR, self.now)
        }
    }

    fn load(files: &InitFiles, bundle_pem: &str) -> Result<Ca, CaError> {
        let key = &files.intermediate_key_pem;
        Ca::from_pem(key, &files.intermediate_pem, bundle_pem, TD)
    }

    fn checkout() -> SpiffeId {
        SpiffeId::new(TD, "123456789012", "eu-west-1", "prod", "checkout").unwrap()
    }

    /// The certificates of a PEM chain, parsed. The DER is leaked so tests can hold the
    /// parsed certificates without juggling lifetimes.
    fn chain(pem: &str) -> Vec<X509Certificate<'static>> {
        parse_all(certificates(pem, "test").unwrap().leak(), "test").unwrap()
    }

    fn leaf(pem: &str) -> X509Certificate<'static> {
        chain(pem).remove(0)
    }

    fn sans<'a>(cert: &'a X509Certificate) -> &'a [GeneralName<'a>] {
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        &sans.value.general_names
    }

    /// A CSR asking for `sans` (and CA if `is_ca`), signed by a fresh key of `alg`, with the
    /// subject CN `tamper-me`.
    fn csr_with(
        alg: &'static rcgen::SignatureAlgorithm,
        sans: Vec<SanType>,
        is_ca: IsCa,
    ) -> (String, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tamper-me");
        params.subject_alt_names = sans;
        params.is_ca = is_ca;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (pem, key)
    }

    fn csr_for(id: &SpiffeId) -> (String, KeyPair) {
        let uri = SanType::URI(id.to_string().try_into().unwrap());
        csr_with(&PKCS_ECDSA_P256_SHA256, vec![uri], IsCa::NoCa)
    }

    /// PEM of any DER, to hand the CA bytes no library would write.
    fn pem(label: &str, der: &[u8]) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::new();
        for chunk in der.chunks(3) {
            let bits = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b));
            let bits = bits << (8 * (3 - chunk.len()));
            for i in 0..4 {
                let c = match i <= chunk.len() {
                    true => B64[(bits >> (18 - 6 * i) & 63) as usize] as char,
                    false => '=',
                };
                text.push(c);
            }
        }
        format!("-----BEGIN {label}-----\n{text}\n-----END {label}-----\n")
    }

    #[test]
    fn init_makes_a_ca_that_loads() {
        let f = Fixture::new();
        assert_eq!(f.ca.trust_domain(), TD);
        assert_eq!(f.ca.chain_pem(), f.files.intermediate_pem);
        assert_eq!(f.ca.bundle_pem(), f.files.root_pem);
        assert_eq!(
            f.ca.not_after(),
            whole_seconds(f.now) + INTERMEDIATE_VALIDITY
        );
    }

    #[test]
    fn init_makes_a_ten_year_root_over_an_intermediate_of_path_length_zero() {
        let f = Fixture::new();
        let root = leaf(&f.files.root_pem);
        let intermediate = leaf(&f.files.intermediate_pem);
        let constraints = intermediate.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        assert!(issued_by(&intermediate, &root));
        assert!(issued_by(&root, &root));
        assert!(root.is_ca());
        let not_after = system_time(root.validity().not_after);
        assert_eq!(not_after, whole_seconds(f.now) + ROOT_VALIDITY);
    }

    #[test]
    fn a_workload_certificate_names_only_the_spiffe_id() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let leaf = leaf(&f.issue(&csr, &checkout()).unwrap().chain_pem);
        let uri = checkout().to_string();
        assert_eq!(sans(&leaf), [GeneralName::URI(&uri)]);
        let cn: Vec<_> = leaf.subject().iter_common_name().collect();
        assert_eq!(cn.len(), 1);
        assert_eq!(cn[0].as_str().unwrap(), "checkout");
    }

    fn localities(cert: &X509Certificate) -> Vec<String> {
        let names = cert.subject().iter_locality();
        names.map(|l| l.as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_workload_certificate_names_the_attested_zone_as_its_locality_and_never_the_csrs() {
        let f = Fixture::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        (params.distinguished_name).push(DnType::LocalityName, "eu-west-1c");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let zoned =
            f.ca.issue_workload(&csr, &checkout(), Some("eu-west-1a"), HOUR, f.now)
                .unwrap();
        let leaf_in_zone = leaf(&zoned.chain_pem);
        assert_eq!(localities(&leaf_in_zone), ["eu-west-1a"]);
        let uri = checkout().to_string();
        assert_eq!(sans(&leaf_in_zone), [GeneralName::URI(&uri)]);
        // No zone from ECS: no locality at all, whatever the CSR asked for.
        let unzoned = leaf(&f.issue(&csr, &checkout()).unwrap().chain_pem);
        assert!(localities(&unzoned).is_empty());
        let empty =
            f.ca.issue_workload(&csr, &checkout(), Some(""), HOUR, f.now)
                .unwrap();
        assert!(localities(&leaf(&empty.chain_pem)).is_empty());
    }

    #[test]
    fn a_workload_certificate_is_an_end_entity_for_tls_both_ways() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let leaf = leaf(&f.issue(&csr, &checkout()).unwrap().chain_pem);
        let constraints = leaf.basic_constraints().unwrap().unwrap();
        assert!(!constraints.value.ca && constraints.critical);
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing && !eku.email_protection && !eku.time_stamping);
        assert!(!eku.ocsp_signing && eku.other.is_empty());
        let usage = leaf.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature());
        assert_eq!(usage.flags, 1, "digitalSignature alone");
    }

    #[test]
    fn a_workload_certificate_is_signed_by_the_intermediate_for_the_csr_key() {
        let f = Fixture::new();
        let (csr, key) = csr_for(&checkout());
        let chain = chain(&f.issue(&csr, &checkout()).unwrap().chain_pem);
        let [leaf, intermediate] = &chain[..] else {
            panic!(
                "{} certificates, not the leaf and the intermediate",
                chain.len()
            );
        };
        leaf.verify_signature(Some(intermediate.public_key()))
            .unwrap();
        assert_eq!(leaf.issuer().as_raw(), intermediate.subject().as_raw());
        assert_eq!(leaf.public_key().raw, key.subject_public_key_info());
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
                _ => None,
            });
        let ski = intermediate
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.clone()),
                _ => None,
            });
        assert_eq!(aki.unwrap().0, ski.unwrap().0);
    }

    #[test]
    fn a_workload_certificate_has_a_random_positive_16_byte_serial() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let one = f.issue(&csr, &checkout()).unwrap();
        let two = f.issue(&csr, &checkout()).unwrap();
        let serial = leaf(&one.chain_pem).raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] < 0x80);
        assert_eq!(hex(serial), one.serial_hex);
        assert_ne!(one.serial_hex, two.serial_hex);
    }

    #[test]
    fn a_workload_certificate_starts_before_now_and_lasts_its_validity() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let issued = f.issue(&csr, &checkout()).unwrap();
        let validity = leaf(&issued.chain_pem).validity().clone();
        let now = whole_seconds(f.now);
        assert_eq!(system_time(validity.not_before), now - CLOCK_SKEW);
        assert_eq!(system_time(validity.not_after), now + HOUR);
        assert_eq!(issued.not_after, now + HOUR);
    }

    #[test]
    fn a_workload_certificate_never_outlives_the_ca() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let late = f.now + INTERMEDIATE_VALIDITY - HOUR;
        let issued =
            f.ca.issue_workload(&csr, &checkout(), None, 24 * HOUR, late)
                .unwrap();
        assert_eq!(issued.not_after, f.ca.not_after());
        let not_after = leaf(&issued.chain_pem).validity().not_after;
        assert_eq!(system_time(not_after), f.ca.not_after());
    }

    #[test]
    fn an_expired_ca_issues_nothing() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let after = f.ca.not_after() + HOUR;
        let e =
            f.ca.issue_workload(&csr, &checkout(), None, HOUR, after)
                .unwrap_err();
        assert!(matches!(e, CsrError::CannotIssue(_)), "{e}");
        let e = f.ca.issue_server(&[], SERVER_URI, HOUR, after).unwrap_err();
        assert!(matches!(e, CaError::Expired(_)), "{e}");
    }

    #[test]
    fn an_id_of_another_trust_domain_is_not_signed() {
        let f = Fixture::new();
        let other = SpiffeId::new("other.example", "1", "r", "c", "s").unwrap();
        let (csr, _) = csr_for(&other);
        let e = f.issue(&csr, &other).unwrap_err();
        assert!(matches!(e, CsrError::CannotIssue(_)), "{e}");
    }

    #[test]
    fn a_csr_without_names_gets_the_id() {
        let f = Fixture::new();
        let (csr, _) = csr_with(&PKCS_ECDSA_P256_SHA256, vec![], IsCa::ExplicitNoCa);
        let leaf = leaf(&f.issue(&csr, &checkout()).unwrap().chain_pem);
        let uri = checkout().to_string();
        assert_eq!(sans(&leaf), [GeneralName::URI(&uri)]);
    }

    #[test]
    fn a_csr_asking_for_a_ca_is_refused() {
        let f = Fixture::new();
        let ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let (csr, _) = csr_with(&PKCS_ECDSA_P256_SHA256, vec![], ca);
        let e = f.issue(&csr, &checkout()).unwrap_err();
        assert_eq!(e, CsrError::AsksForCa);
        assert_eq!(e.reason(), "csr_asks_for_ca");
    }

    #[test]
    fn the_identity_free_checks_refuse_a_ca_or_a_dns_name_and_pass_a_plain_csr() {
        let ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let (asks_ca, _) = csr_with(&PKCS_ECDSA_P256_SHA256, vec![], ca);
        assert_eq!(check_csr(&asks_ca), Err(CsrError::AsksForCa));
        let dns = vec![SanType::DnsName("checkout.internal".try_into().unwrap())];
        let (named, _) = csr_with(&PKCS_ECDSA_P256_SHA256, dns, IsCa::NoCa);
        assert!(matches!(check_csr(&named), Err(CsrError::ForeignName(_))));
        let (p384, _) = csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, vec![], IsCa::NoCa);
        assert_eq!(check_csr(&p384).unwrap_err().reason(), "csr_key_type");
        let (plain, _) = csr_with(&PKCS_ECDSA_P256_SHA256, vec![], IsCa::NoCa);
        assert_eq!(check_csr(&plain), Ok(()));
        assert_eq!(check_csr("junk").unwrap_err().reason(), "csr_malformed");
    }

    #[test]
    fn a_csr_asking_for_another_spiffe_id_is_refused() {
        let f = Fixture::new();
        let other = SpiffeId::new(TD, "123456789012", "eu-west-1", "prod", "payments").unwrap();
        let (csr, _) = csr_for(&other);
        let e = f.issue(&csr, &checkout()).unwrap_err();
        assert!(
            matches!(&e, CsrError::ForeignName(n) if n.contains("payments")),
            "{e}"
        );
        assert_eq!(e.reason(), "csr_foreign_name");
    }

    #[test]
    fn a_csr_asking_for_a_dns_name_besides_the_id_is_refused() {
        let f = Fixture::new();
        let sans = vec![
            SanType::URI(checkout().to_string().try_into().unwrap()),
            SanType::DnsName("checkout.internal".try_into().unwrap()),
        ];
        let (csr, _) = csr_with(&PKCS_ECDSA_P256_SHA256, sans, IsCa::NoCa);
        let e = f.issue(&csr, &checkout()).unwrap_err();
        assert_eq!(
            e,
            CsrError::ForeignName("the DNS name `checkout.internal`".into())
        );
    }

    #[test]
    fn a_csr_with_a_p384_key_is_refused() {
        let f = Fixture::new();
        let (csr, _) = csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, vec![], IsCa::NoCa);
        let e = f.issue(&csr, &checkout()).unwrap_err();
        assert!(
            matches!(&e, CsrError::UnsupportedKey(why) if why.contains("secp384r1")),
            "{e}"
        );
        assert_eq!(e.reason(), "csr_key_type");
    }

    #[test]
    fn a_csr_with_an_ed25519_key_is_refused() {
        let f = Fixture::new();
        let (csr, _) = csr_with(&rcgen::PKCS_ED25519, vec![], IsCa::NoCa);
        let e = f.issue(&csr, &checkout()).unwrap_err();
        assert!(matches!(e, CsrError::UnsupportedKey(_)), "{e}");
    }

    #[test]
    fn a_tampered_csr_is_refused_for_its_signature() {
        let f = Fixture::new();
        let (csr, _) = csr_for(&checkout());
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut der = der.to_vec();
        let at = der.windows(9).position(|w| w == b"tamper-me").unwrap();
        der[at + 8] = b'x';
        let e = f
            .issue(&pem("CERTIFICATE REQUEST", &der), &checkout())
            .unwrap_err();
        assert_eq!(e, CsrError::BadSignature);
        assert_eq!(e.reason(), "csr_signature");
    }

    #[test]
    fn garbage_is_refused_as_malformed() {
        let f = Fixture::new();
        let not_der = pem("CERTIFICATE REQUEST", b"not a certificate request");
        for garbage in ["", "hello", &not_der, &f.files.intermediate_pem] {
            let e = f.issue(garbage, &checkout()).unwrap_err();
            assert!(matches!(e, CsrError::Malformed(_)), "{garbage:?}: {e}");
            assert_eq!(e.reason(), "csr_malformed");
            assert!(matches!(
                key_sha256_hex(garbage),
                Err(CsrError::Malformed(_))
            ));
        }
    }

    #[test]
    fn the_key_hash_is_the_sha256_of_the_csr_key_info() {
        let (csr, key) = csr_for(&checkout());
        let expected = hex(&Sha256::digest(key.subject_public_key_info()));
        assert_eq!(key_sha256_hex(&csr).unwrap(), expected);
        assert_eq!(expected.len(), 64);
        let (other, _) = csr_for(&checkout());
        assert_ne!(key_sha256_hex(&other).unwrap(), expected);
    }

    #[test]
    fn a_key_that_is_not_the_ca_certificates_is_refused() {
        let f = Fixture::new();
        let (files, root) = (&f.files, &f.files.root_pem);
        let e = Ca::from_pem(&files.root_key_pem, &files.intermediate_pem, root, TD).unwrap_err();
        assert!(matches!(e, CaError::KeyMismatch), "{e}");
        assert_eq!(e.to_string(), "the key does not match the CA certificate");
    }

    #[test]
    fn a_ca_chain_starting_with_a_leaf_is_refused() {
        let f = Fixture::new();
        let server = f.server(&["xds"], SERVER_URI).unwrap();
        let e =
            Ca::from_pem(&server.key_pem, &server.chain_pem, &f.files.root_pem, TD).unwrap_err();
        assert!(matches!(e, CaError::NotCa), "{e}");
        assert_eq!(
            e.to_string(),
            "the CA chain's first certificate is not a CA"
        );
    }

    #[test]
    fn an_empty_bundle_or_chain_is_refused() {
        let f = Fixture::new();
        let e = load(&f.files, "").unwrap_err();
        assert_eq!(e.to_string(), "no certificate in the trust bundle");
        let key = &f.files.intermediate_key_pem;
        let e = Ca::from_pem(key, "", &f.files.root_pem, TD).unwrap_err();
        assert!(matches!(e, CaError::EmptyChain), "{e}");
    }

    #[test]
    fn a_chain_under_a_root_not_in_the_bundle_is_refused() {
        let f = Fixture::new();
        let other = init(TD, f.now).unwrap();
        let e = load(&f.files, &other.root_pem).unwrap_err();
        assert!(matches!(e, CaError::NotUnderBundle), "{e}");
    }

    #[test]
    fn a_bundle_of_old_and_new_roots_is_accepted() {
        let f = Fixture::new();
        let other = init(TD, f.now).unwrap();
        load(&f.files, &format!("{}{}", other.root_pem, f.files.root_pem)).unwrap();
    }

    #[test]
    fn a_chain_out_of_order_is_refused() {
        let f = Fixture::new();
        let files = InitFiles {
            intermediate_pem: f.files.intermediate_pem.repeat(2),
            ..f.files.clone()
        };
        let e = load(&files, &f.files.root_pem).unwrap_err();
        assert!(matches!(e, CaError::ChainOrder(0)), "{e}");
    }

    #[test]
    fn an_expired_ca_certificate_is_refused() {
        let files = init(TD, SystemTime::now() - 2 * INTERMEDIATE_VALIDITY).unwrap();
        let e = load(&files, &files.root_pem).unwrap_err();
        assert!(
            e.to_string().starts_with("the CA certificate expired on "),
            "{e}"
        );
    }

    #[test]
    fn a_broken_key_or_trust_domain_is_refused() {
        let f = Fixture::new();
        let (chain, root) = (&f.files.intermediate_pem, &f.files.root_pem);
        let e = Ca::from_pem("not a key", chain, root, TD).unwrap_err();
        assert!(matches!(e, CaError::Key(_)), "{e}");
        let e = Ca::from_pem(&f.files.intermediate_key_pem, chain, root, "Mesh").unwrap_err();
        assert!(matches!(e, CaError::TrustDomain(_)), "{e}");
    }

    #[test]
    fn a_server_certificate_names_its_dns_names_addresses_and_uri() {
        let f = Fixture::new();
        let server = f
            .server(&["xds.internal", "127.0.0.1", "::1"], SERVER_URI)
            .unwrap();
        let chain = chain(&server.chain_pem);
        assert_eq!(chain.len(), 2, "the leaf, then the intermediate");
        let v6 = std::net::Ipv6Addr::LOCALHOST.octets();
        let expected = [
            GeneralName::DNSName("xds.internal"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::IPAddress(&v6),
            GeneralName::URI(SERVER_URI),
        ];
        assert_eq!(sans(&chain[0]), expected);
        let eku = chain[0].extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(server.not_after, whole_seconds(f.now) + HOUR);
    }

    #[test]
    fn a_server_certificate_comes_with_its_p256_key() {
        let f = Fixture::new();
        let server = f.server(&["xds"], SERVER_URI).unwrap();
        let key = KeyPair::from_pem(&server.key_pem).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
        let leaf = leaf(&server.chain_pem);
        let public_key = leaf.public_key().subject_public_key.data.as_ref();
        assert_eq!(public_key, key.public_key_raw());
    }

    #[test]
    fn a_server_name_that_is_not_a_dns_name_or_an_empty_uri_is_refused() {
        let f = Fixture::new();
        let e = f.server(&["bad name!"], SERVER_URI).unwrap_err();
        assert!(
            matches!(&e, CaError::ServerName(n) if n == "bad name!"),
            "{e}"
        );
        let e = f.server(&["xds"], "").unwrap_err();
        assert!(matches!(e, CaError::ServerName(_)), "{e}");
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let f = Fixture::new();
        let server = f.server(&["xds"], SERVER_URI).unwrap();
        for shown in [
            format!("{:?}", f.files),
            format!("{server:?}"),
            format!("{:?}", f.ca),
        ] {
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        }
    }

    #[test]
    fn a_long_service_name_is_left_out_of_the_common_name_not_cut() {
        let f = Fixture::new();
        let id = SpiffeId::new(TD, "1", "r", "c", &"s".repeat(65)).unwrap();
        let (csr, _) = csr_for(&id);
        let leaf = leaf(&f.issue(&csr, &id).unwrap().chain_pem);
        assert_eq!(leaf.subject().iter_common_name().count(), 0);
        assert_eq!(leaf.subject().iter_organization().count(), 1);
    }
}
