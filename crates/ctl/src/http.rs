//! A minimal blocking HTTP/1.1 client for the node's management API: one request per
//! connection (`Connection: close`), plain TCP (the control address is loopback), bodies sized
//! by Content-Length or read to the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest a request may take (rabbitmqctl's default timeout is 60 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How to reach and authenticate to a node.
#[derive(Debug, Clone)]
pub struct Target {
    /// host:port
    pub addr: String,
    /// (header name, value) sent with every request.
    pub auth: (String, String),
}

pub fn request(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let mut s = TcpStream::connect(&t.addr).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = s.set_write_timeout(Some(REQUEST_TIMEOUT));
    let body = body.unwrap_or(&[]);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        t.addr,
        t.auth.0,
        t.auth.1,
        body.len()
    );
    for (k, v) in headers {
        // Header values cannot carry line breaks.
        head.push_str(&format!("{k}: {}\r\n", v.replace(['\r', '\n'], " ")));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("cannot send to {}: {e}", t.addr))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("cannot read from {}: {e}", t.addr))?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("malformed HTTP response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "malformed HTTP response head")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let mut body = raw[end + 4..].to_vec();
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("content-length") {
            if let Ok(n) = v.trim().parse::<usize>() {
                body.truncate(n);
            }
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("malformed chunk")?;
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|_| "malformed chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "malformed chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves responses with Content-Length and chunked bodies parse to the same body.
    #[test]
    fn parses_responses() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").expect("parses");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
        let r =
            parse(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n").expect("parses");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"[]"[..]));
    }
}
