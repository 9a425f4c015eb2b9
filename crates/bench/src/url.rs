//! The AMQP URL given with `--url`, turned into amqprs' connection arguments.
//!
//! Only the shape the harness needs: `amqp://user:pass@host:port/vhost` with the vhost
//! percent-encoded (`%2f` is `/`). No TLS (`amqps`), no query parameters: a benchmark against a
//! local broker needs neither, and an unsupported URL is refused instead of half-understood.

use anyhow::{bail, Context, Result};

/// Where and as whom the generator connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub vhost: String,
}

const AMQP_PORT_DEFAULT: u16 = 5672;

impl AmqpUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("amqp://") else {
            bail!("unsupported URL '{url}': only amqp://user:pass@host:port/vhost is understood");
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (percent_decode(user)?, percent_decode(pass)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().with_context(|| format!("bad port '{port}' in URL '{url}'"))?)
            }
            _ => (hostport, AMQP_PORT_DEFAULT),
        };
        if host.is_empty() {
            bail!("no host in URL '{url}'");
        }
        // RabbitMQ's clients read a missing or empty path as the default vhost "/".
        let vhost = match path {
            None | Some("") => "/".to_owned(),
            Some(path) => percent_decode(path)?,
        };
        Ok(Self { host: host.to_owned(), port, username, password, vhost })
    }
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).with_context(|| format!("truncated percent escape in '{text}'"))?;
            let byte =
                u8::from_str_radix(hex, 16).with_context(|| format!("bad percent escape '%{hex}' in '{text}'"))?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).with_context(|| format!("'{text}' is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full URL keeps every part, and `%2f` decodes to the default vhost.
    #[test]
    fn parses_full_url() {
        let url = AmqpUrl::parse("amqp://bob:s%40cret@127.0.0.1:5680/%2f").expect("valid URL");
        assert_eq!(
            url,
            AmqpUrl {
                host: "127.0.0.1".into(),
                port: 5680,
                username: "bob".into(),
                password: "s@cret".into(),
                vhost: "/".into(),
            }
        );
    }

    /// Missing parts take RabbitMQ's defaults: guest/guest, port 5672, vhost "/".
    #[test]
    fn defaults_missing_parts() {
        let url = AmqpUrl::parse("amqp://localhost").expect("valid URL");
        assert_eq!(url.port, 5672);
        assert_eq!(url.username, "guest");
        assert_eq!(url.vhost, "/");
        assert_eq!(AmqpUrl::parse("amqp://h/v1").expect("valid URL").vhost, "v1");
    }

    /// What the harness cannot honour is refused, not guessed at.
    #[test]
    fn refuses_other_schemes_and_bad_ports() {
        assert!(AmqpUrl::parse("amqps://localhost").is_err());
        assert!(AmqpUrl::parse("amqp://localhost:99999").is_err());
        assert!(AmqpUrl::parse("amqp://h/%2").is_err());
    }
}
