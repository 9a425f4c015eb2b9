//! A blocking raw frame client for what real clients cannot send: wrong protocol headers, oversize
//! or malformed frames, frames on channels that are not open. It speaks just enough AMQP 0-9-1 to
//! get through the handshake; everything after that is the test's to send and check.
//!
//! It must never hide what the server did: every receive has a deadline, a closed socket is a
//! result rather than an error, and nothing is retried or skipped except heartbeats where a
//! caller asks for the next method.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use amqp_codec::frame::{write_body, write_header, write_heartbeat, write_method, FRAME_END};
use amqp_codec::*;
use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};

/// What the next read from the server produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Recv {
    Frame(Frame),
    /// The server closed the socket (FIN, or RST when it closed with our bytes still unread).
    Closed,
}

/// One TCP connection speaking raw frames.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// The negotiated frame_max once tuned; bodies are split to fit it.
    pub frame_max: u32,
}

impl RawClient {
    pub fn connect(addr: impl ToSocketAddrs) -> Result<RawClient> {
        let stream = TcpStream::connect(addr).context("connect")?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            buf: BytesMut::new(),
            // Spec: before tuning, neither peer may send frames above the minimum frame size.
            decoder: FrameDecoder::new(FRAME_MIN_SIZE),
            frame_max: FRAME_MIN_SIZE,
        })
    }

    /// Turns Nagle's algorithm back on (`connect` turns it off), as some clients leave it.
    pub fn set_nodelay(&mut self, on: bool) -> std::io::Result<()> {
        self.stream.set_nodelay(on)
    }

    /// Sends bytes exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a well-framed frame of any type around an arbitrary payload.
    pub fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> std::io::Result<()> {
        self.send_raw(&frame_bytes(kind, channel, payload))
    }

    pub fn send_method(&mut self, channel: u16, method: impl Into<Method>) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        write_method(&mut buf, channel, &method.into()).map_err(std::io::Error::other)?;
        self.send_raw(&buf)
    }

    /// Sends a basic content header with no properties.
    pub fn send_header(&mut self, channel: u16, body_size: u64) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        // Property flags 0: no properties follow.
        write_header(&mut buf, channel, 60, body_size, &[0, 0]);
        self.send_raw(&buf)
    }

    /// Sends a body as as many frames as the negotiated frame_max requires.
    pub fn send_body(&mut self, channel: u16, body: &[u8]) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        write_body(&mut buf, channel, body, self.frame_max);
        self.send_raw(&buf)
    }

    pub fn send_heartbeat(&mut self) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        write_heartbeat(&mut buf);
        self.send_raw(&buf)
    }

    /// basic.publish with its header and body, as a client library would send it.
    pub fn publish(&mut self, channel: u16, exchange: &str, routing_key: &str, body: &[u8]) -> std::io::Result<()> {
        let publish = BasicPublish { exchange: exchange.into(), routing_key: routing_key.into(), ..Default::default() };
        self.send_method(channel, publish)?;
        self.send_header(channel, body.len() as u64)?;
        self.send_body(channel, body)
    }

    /// Reads until `n` raw bytes arrived (for replies that are not frames, like the protocol
    /// header); fewer when the socket closed first.
    pub fn recv_bytes(&mut self, n: usize, timeout: Duration) -> Result<Bytes> {
        let end = Instant::now() + timeout;
        while self.buf.len() < n {
            if !self.fill(end).with_context(|| format!("waiting {timeout:?} for {n} bytes"))? {
                break;
            }
        }
        let n = n.min(self.buf.len());
        Ok(self.buf.split_to(n).freeze())
    }

    /// The next frame, or `Closed`; an error when nothing arrived within `timeout` or the server
    /// sent something that is not a valid frame.
    pub fn recv(&mut self, timeout: Duration) -> Result<Recv> {
        self.recv_before(Instant::now() + timeout).with_context(|| format!("waiting {timeout:?} for a frame"))
    }

    fn recv_before(&mut self, end: Instant) -> Result<Recv> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(Recv::Frame(frame)),
                Ok(None) => {}
                Err(e) => bail!("the server sent an invalid frame: {e:?}"),
            }
            if !self.fill(end)? {
                if !self.buf.is_empty() {
                    bail!("socket closed after {} bytes of a partial frame", self.buf.len());
                }
                return Ok(Recv::Closed);
            }
        }
    }

    /// The next method frame, skipping heartbeats; an error on anything else, including a close.
    pub fn recv_method(&mut self, timeout: Duration) -> Result<(u16, Method)> {
        let end = Instant::now() + timeout;
        loop {
            match self.recv_before(end).with_context(|| format!("waiting {timeout:?} for a method frame"))? {
                Recv::Frame(Frame::Heartbeat { .. }) => continue,
                Recv::Frame(Frame::Method { channel, method }) => return Ok((channel, method)),
                other => bail!("expected a method frame, got {other:?}"),
            }
        }
    }

    /// A content header and its body frames, as they follow basic.get-ok or basic.deliver.
    pub fn recv_content(&mut self, timeout: Duration) -> Result<Bytes> {
        let end = Instant::now() + timeout;
        let body_size = match self.recv_before(end).with_context(|| format!("waiting {timeout:?} for content"))? {
            Recv::Frame(Frame::Header { body_size, .. }) => body_size,
            other => bail!("expected a content header, got {other:?}"),
        };
        let mut body = BytesMut::new();
        while (body.len() as u64) < body_size {
            match self.recv_before(end).with_context(|| format!("waiting {timeout:?} for content"))? {
                Recv::Frame(Frame::Body { payload, .. }) => body.extend_from_slice(&payload),
                other => bail!("expected a content body, got {other:?}"),
            }
        }
        Ok(body.freeze())
    }

    /// Waits for the server to close the socket; heartbeats are allowed, any other frame is not.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            match self.recv_before(end).with_context(|| format!("waiting {timeout:?} for the socket to close"))? {
                Recv::Closed => return Ok(()),
                Recv::Frame(Frame::Heartbeat { .. }) => continue,
                Recv::Frame(f) => bail!("expected the socket to close, got {f:?}"),
            }
        }
    }

    /// Reads more bytes into the buffer before `end`; false when the socket closed.
    fn fill(&mut self, end: Instant) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("nothing more from the server before the deadline");
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                // A server that closes with our bytes unread makes the kernel send RST, not FIN.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends the protocol header, reads connection.start and answers start-ok with `mechanism`,
    /// announcing the capabilities modern clients do (`authentication_failure_close`,
    /// `consumer_cancel_notify`).
    pub fn start(&mut self, mechanism: &str, response: &[u8]) -> Result<ConnectionStart> {
        let mut capabilities = FieldTable::new();
        capabilities.insert("authentication_failure_close", FieldValue::Bool(true));
        capabilities.insert("consumer_cancel_notify", FieldValue::Bool(true));
        self.start_with(PROTOCOL_HEADER, mechanism, response, capabilities)
    }

    /// [`RawClient::start`] with another protocol `header` and `capabilities`.
    pub fn start_with(
        &mut self,
        header: &[u8],
        mechanism: &str,
        response: &[u8],
        capabilities: FieldTable,
    ) -> Result<ConnectionStart> {
        self.send_raw(header)?;
        let start = match self.recv_method(HANDSHAKE_STEP)? {
            (0, Method::ConnectionStart(s)) => s,
            other => bail!("expected connection.start, got {other:?}"),
        };
        let mut client_properties = FieldTable::new();
        client_properties.insert("product", "warren-testkit raw client".into());
        client_properties.insert("capabilities", FieldValue::Table(capabilities));
        let start_ok = ConnectionStartOk {
            client_properties,
            mechanism: mechanism.into(),
            response: Bytes::copy_from_slice(response),
            locale: "en_US".into(),
        };
        self.send_method(0, start_ok)?;
        Ok(start)
    }

    /// Reads connection.tune and answers with what `answer` makes of it; returns that answer,
    /// which is what the connection now runs with.
    pub fn tune(&mut self, answer: impl FnOnce(&ConnectionTune) -> ConnectionTuneOk) -> Result<ConnectionTuneOk> {
        let tune = match self.recv_method(HANDSHAKE_STEP)? {
            (0, Method::ConnectionTune(t)) => t,
            other => bail!("expected connection.tune, got {other:?}"),
        };
        let tune_ok = answer(&tune);
        self.send_method(0, tune_ok.clone())?;
        if tune_ok.frame_max != 0 {
            self.frame_max = tune_ok.frame_max;
            self.decoder.frame_max = tune_ok.frame_max;
        }
        Ok(tune_ok)
    }

    /// Sends connection.open and waits for open-ok.
    pub fn open(&mut self, vhost: &str) -> Result<()> {
        self.send_method(0, ConnectionOpen { virtual_host: vhost.into(), ..Default::default() })?;
        match self.recv_method(HANDSHAKE_STEP)? {
            (0, Method::ConnectionOpenOk(_)) => Ok(()),
            other => bail!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// The whole handshake with PLAIN, accepting the server's tune as offered.
    pub fn handshake(&mut self, user: &str, pass: &str, vhost: &str) -> Result<ConnectionTuneOk> {
        self.start("PLAIN", &plain(user, pass))?;
        let tuned = self.tune(echo_tune)?;
        self.open(vhost)?;
        Ok(tuned)
    }

    /// Opens channel `n` and waits for open-ok.
    pub fn open_channel(&mut self, n: u16) -> Result<()> {
        self.send_method(n, ChannelOpen::default())?;
        match self.recv_method(HANDSHAKE_STEP)? {
            (ch, Method::ChannelOpenOk(_)) if ch == n => Ok(()),
            other => Err(anyhow!("expected channel.open-ok on channel {n}, got {other:?}")),
        }
    }
}

/// How long each handshake step may take; generous because test servers share two cores.
const HANDSHAKE_STEP: Duration = Duration::from_secs(5);

/// Accepts the server's tune values unchanged, as most client libraries do by default.
pub fn echo_tune(t: &ConnectionTune) -> ConnectionTuneOk {
    ConnectionTuneOk { channel_max: t.channel_max, frame_max: t.frame_max, heartbeat: t.heartbeat }
}

/// A SASL PLAIN response: empty authorisation id, user, password, NUL-separated.
pub fn plain(user: &str, pass: &str) -> Vec<u8> {
    format!("\0{user}\0{pass}").into_bytes()
}

/// An AMQPLAIN response: a field table with LOGIN and PASSWORD, without the table's 4-byte length
/// prefix (RabbitMQ's and pika's encoding).
pub fn amqplain(user: &str, pass: &str) -> Vec<u8> {
    let mut t = FieldTable::new();
    t.insert("LOGIN", user.into());
    t.insert("PASSWORD", pass.into());
    let mut buf = BytesMut::new();
    t.encode(&mut buf).expect("short keys and strings always encode");
    buf[4..].to_vec()
}

/// The bytes of one frame: type, channel, size, payload, frame-end.
pub fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(payload.len() + 8);
    buf.put_u8(kind);
    buf.put_u16(channel);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the AMQPLAIN response is a field table minus its length prefix: putting the prefix
    /// back decodes to LOGIN and PASSWORD.
    #[test]
    fn amqplain_is_a_table_without_its_length() {
        let r = amqplain("guest", "secret");
        let mut wire = (r.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&r);
        let t = FieldTable::from_wire(&wire).expect("a table once prefixed");
        assert_eq!(t.get("LOGIN").and_then(FieldValue::as_str), Some("guest"));
        assert_eq!(t.get("PASSWORD").and_then(FieldValue::as_str), Some("secret"));
    }

    /// Proves `frame_bytes` writes a frame the codec reads back unchanged.
    #[test]
    fn frame_bytes_decode() {
        let mut buf = BytesMut::from(&frame_bytes(3, 7, b"abc")[..]);
        let f = FrameDecoder::new(FRAME_MIN_SIZE).decode(&mut buf).expect("valid").expect("complete");
        assert_eq!(f, Frame::Body { channel: 7, payload: Bytes::from_static(b"abc") });
        assert_eq!(plain("u", "p"), b"\0u\0p");
    }
}
