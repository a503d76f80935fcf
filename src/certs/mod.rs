//! Certificates, with no sockets: the faults a scenario can ask for, PEM
//! parsing of certificate files, a test CA (rcgen), and server certificates
//! signed by it, healthy or broken on purpose (expired, not yet valid, for
//! the wrong host, self-signed) so senders' certificate checks can be tested.
//!
//! `scenario/` uses it to check `[tls]` when a file is loaded; `server/`
//! uses it to build each listener's TLS configuration. It knows neither.
//!
//! The CA lives in a folder (`--ca-dir`, by default `mailfault-ca` in the
//! system's temporary folder) and is reused across runs, so a client can
//! trust `ca.pem` once.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate made broken on purpose, or a healthy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFault {
    /// Signed by the test CA, valid now, for the server's names.
    Valid,
    /// Signed by itself: no client trusts it without being told.
    SelfSigned,
    /// Signed by the test CA, expired 30 days ago.
    Expired,
    /// Signed by the test CA, valid from 30 days from now.
    NotYetValid,
    /// Signed by the test CA, for `wrong-host.invalid` only.
    WrongHost,
}

impl CertFault {
    /// Every fault, by the name scenarios and `--certificate` use.
    const TABLE: [(&'static str, CertFault); 5] = [
        ("valid", CertFault::Valid),
        ("self_signed", CertFault::SelfSigned),
        ("expired", CertFault::Expired),
        ("wrong_host", CertFault::WrongHost),
        ("not_yet_valid", CertFault::NotYetValid),
    ];

    pub const NAMES: [&'static str; 5] = {
        let mut names = [""; 5];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::TABLE[i].0;
            i += 1;
        }
        names
    };

    pub fn from_name(s: &str) -> Option<Self> {
        Self::TABLE.iter().find(|(n, _)| *n == s).map(|(_, f)| *f)
    }

    /// The name scenarios use, e.g. `self_signed`.
    pub fn name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("valid", |(n, _)| n)
    }
}

/// The name a wrong-host certificate is made for.
pub const WRONG_HOST: &str = "wrong-host.invalid";

/// A certificate chain and its key, as PEM and as rustls wants them.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn chain(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        parse_chain(&self.cert_pem)
    }
    pub fn key(&self) -> anyhow::Result<PrivateKeyDer<'static>> {
        parse_key(&self.key_pem)
    }
}

/// The certificates of a PEM file, leaf first; an error when there is none.
pub fn parse_chain(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM: {e}"))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM data");
    Ok(chain)
}

/// The first private key of a PEM file.
pub fn parse_key(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("bad private key PEM: {e}"))
}

/// The test certificate authority.
pub struct TestCa {
    pub cert_pem: String,
    key: KeyPair,
    /// Where `ca.pem` is, when it was written or read from a folder.
    pub path: Option<PathBuf>,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mailfault");
    dn.push(DnType::CommonName, cn);
    dn
}

impl TestCa {
    /// A new CA, valid for ten years.
    pub fn generate() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("mailfault test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
            path: None,
        })
    }

    /// Reads `ca.pem` and `ca.key` from a folder.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(dir.join("ca.pem"))
            .with_context(|| format!("cannot read {}", dir.join("ca.pem").display()))?;
        let key_pem = std::fs::read_to_string(dir.join("ca.key"))
            .with_context(|| format!("cannot read {}", dir.join("ca.key").display()))?;
        let key = KeyPair::from_pem(&key_pem).context("bad CA key")?;
        // Check the certificate parses with this key before using it.
        Issuer::from_ca_cert_pem(&cert_pem, &key).context("bad CA certificate")?;
        Ok(Self {
            cert_pem,
            key,
            path: Some(dir.join("ca.pem")),
        })
    }

    /// Reuses the CA in `dir`, or makes one there.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        if dir.join("ca.pem").exists() && dir.join("ca.key").exists() {
            return Self::load(dir);
        }
        let mut ca = Self::generate()?;
        ca.write(dir)?;
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca.key` (key readable by the owner only).
    pub fn write(&mut self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&dir.join("ca.key"), &self.key.serialize_pem(), true)?;
        write_atomic(&dir.join("ca.pem"), &self.cert_pem, false)?;
        self.path = Some(dir.join("ca.pem"));
        Ok(())
    }

    /// A server certificate for `hosts` (names or IP addresses) with the
    /// given fault.
    pub fn issue(&self, hosts: &[String], fault: CertFault) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = match fault {
            CertFault::WrongHost => vec![WRONG_HOST.into()],
            _ => hosts.to_vec(),
        };
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = name(names.first().map_or("mailfault", |s| s.as_str()));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = match fault {
            CertFault::Expired => (now - Duration::days(60), now - Duration::days(30)),
            CertFault::NotYetValid => (now + Duration::days(30), now + Duration::days(395)),
            _ => (now - Duration::days(1), now + Duration::days(365)),
        };
        let cert = match fault {
            CertFault::SelfSigned => params.self_signed(&key)?,
            _ => {
                let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
                params.signed_by(&key, &issuer)?
            }
        };
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn write_atomic(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = private;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The names a server certificate is made for: the host name, and the
/// loopback names tests connect to.
pub fn server_names(hostname: &str) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    names
}

/// The default CA folder.
pub fn default_ca_dir() -> PathBuf {
    std::env::temp_dir().join("mailfault-ca")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_every_fault_and_reloads() {
        let ca = TestCa::generate().unwrap();
        for f in CertFault::NAMES {
            let fault = CertFault::from_name(f).unwrap();
            assert_eq!(fault.name(), f);
            let issued = ca.issue(&server_names("mx.test"), fault).unwrap();
            assert_eq!(issued.chain().unwrap().len(), 1);
            issued.key().unwrap();
        }
        let dir = std::env::temp_dir().join(format!("mailfault-ca-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = TestCa::load_or_create(&dir).unwrap();
        let again = TestCa::load_or_create(&dir).unwrap();
        assert_eq!(made.cert_pem, again.cert_pem, "the CA is reused");
        assert!(again.issue(&server_names("x"), CertFault::Valid).is_ok());
    }
}
