//! AMQPS: the TLS acceptor for `--tls-cert`/`--tls-key` (rustls, TLS 1.2 and 1.3), with
//! client-certificate verification against `--tls-ca`; and the management API's HTTPS acceptor
//! (`--management-tls-port`), with the same certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::Config;

/// The acceptor the configuration asks for, or None when AMQPS is off.
pub fn acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    server_config(config, true)
}

/// The HTTPS acceptor of the management API (`--management-tls-port`): the same certificate,
/// offering HTTP/1.1, without asking for client certificates (the API logs in with a password).
pub fn https_acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    server_config(config, false)
}

fn server_config(config: &Config, client_auth: bool) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let chain = certificates(cert)?;
    let key = private_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let ca = config.tls_ca.as_ref().filter(|_| client_auth);
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).with_context(|| format!("adding a CA certificate from {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.tls_fail_if_no_peer_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("{} does not match {}", display(&config.tls_key), display(&config.tls_cert)))?;
    if !client_auth {
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn display(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("cannot parse the PEM private key in {}", path.display()))?
        .ok_or_else(|| anyhow!("no PEM private key in {}", path.display()))
}

/// The user name a client certificate (DER) logs in as under `--ssl-cert-login-from`, or None
/// when it cannot be read or lacks the part asked for.
pub fn cert_login_name(der: &[u8], config: &Config) -> Option<String> {
    use crate::config::SanType;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    match config.ssl_cert_login_from? {
        crate::config::CertLogin::SubjectAlternativeName => {
            let san = cert.subject_alternative_name().ok()??;
            san.value
                .general_names
                .iter()
                .filter_map(|n| match (config.ssl_cert_login_san_type, n) {
                    (SanType::Dns, GeneralName::DNSName(v))
                    | (SanType::Email, GeneralName::RFC822Name(v))
                    | (SanType::Uri, GeneralName::URI(v)) => Some(v.to_string()),
                    (SanType::Ip, GeneralName::IPAddress(b)) => match b.len() {
                        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .nth(config.ssl_cert_login_san_index)
        }
        crate::config::CertLogin::CommonName => subject.iter_common_name().next()?.as_str().ok().map(str::to_owned),
        crate::config::CertLogin::DistinguishedName => {
            let registry = x509_parser::objects::oid_registry();
            // RFC 4514: the RDNs last first, joined by ','; an RDN's attributes joined by '+'.
            let mut rdns: Vec<String> = subject
                .iter()
                .map(|rdn| {
                    rdn.iter()
                        .map(|atv| {
                            let oid = atv.attr_type();
                            let name = match x509_parser::objects::oid2abbrev(oid, registry) {
                                Ok(short) => short.to_owned(),
                                Err(_) => oid.to_id_string(),
                            };
                            match atv.as_str() {
                                Ok(v) => format!("{name}={}", escape_rfc4514(v)),
                                // Not a string type: '#' and the value's DER in hex, as RFC 4514.
                                Err(_) => {
                                    let hex: String =
                                        atv.attr_value().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                                    format!("{name}=#{hex}")
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect();
            rdns.reverse();
            (!rdns.is_empty()).then(|| rdns.join(","))
        }
    }
}

/// Escapes an attribute value as RFC 4514 section 2.4 asks.
fn escape_rfc4514(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_rfc4514;

    #[test]
    fn rfc4514_escapes() {
        assert_eq!(escape_rfc4514("alice"), "alice");
        assert_eq!(escape_rfc4514("Smith, J+r"), "Smith\\, J\\+r");
        assert_eq!(escape_rfc4514("#lead and trail "), "\\#lead and trail\\ ");
        assert_eq!(escape_rfc4514(" x"), "\\ x");
    }
}
