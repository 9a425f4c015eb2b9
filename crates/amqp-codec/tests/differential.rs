//! Differential test against an independent implementation (the `amq-protocol` crate, used by
//! lapin): every frame our encoder writes must parse there, and what that implementation writes
//! back must decode with ours to the same method and properties. Its tables are sorted maps with
//! `l` for every 64-bit integer, so we compare against our value normalised the same way.

#![allow(clippy::unwrap_used)]

use amq_protocol::frame::{gen_frame, parse_frame};
use amqp_codec::frame::{write_header, write_method, FrameDecoder};
use amqp_codec::generated_arbitrary::method;
use amqp_codec::properties::arbitrary::properties;
use amqp_codec::{BasicProperties, FieldTable, FieldValue, Frame, Method};
use bytes::BytesMut;
use proptest::prelude::*;

fn normalise_value(v: &mut FieldValue) {
    match v {
        FieldValue::I64L(x) => *v = FieldValue::I64(*x),
        FieldValue::Table(t) => normalise_table(t),
        FieldValue::Array(items) => items.iter_mut().for_each(normalise_value),
        _ => {}
    }
}

/// A BTreeMap keeps the last value of a repeated key and sorts keys.
fn normalise_table(t: &mut FieldTable) {
    let mut out: Vec<(String, FieldValue)> = Vec::new();
    for (k, mut v) in t.0.drain(..) {
        normalise_value(&mut v);
        if let Some(slot) = out.iter_mut().find(|(k2, _)| *k2 == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    t.0 = out;
}

fn normalise_method(m: &mut Method) {
    // amq-protocol writes the spec's reserved ("deprecated") fields as their defaults.
    match m {
        Method::ConnectionOpen(x) => {
            x.capabilities.clear();
            x.insist = false;
        }
        Method::ConnectionOpenOk(x) => x.known_hosts.clear(),
        Method::ChannelOpen(x) => x.out_of_band.clear(),
        Method::ChannelOpenOk(x) => x.channel_id = Default::default(),
        Method::BasicGetEmpty(x) => x.cluster_id.clear(),
        Method::ExchangeDeclare(x) => x.ticket = 0,
        Method::ExchangeDelete(x) => x.ticket = 0,
        Method::ExchangeBind(x) => x.ticket = 0,
        Method::ExchangeUnbind(x) => x.ticket = 0,
        Method::QueueDeclare(x) => x.ticket = 0,
        Method::QueueBind(x) => x.ticket = 0,
        Method::QueueUnbind(x) => x.ticket = 0,
        Method::QueuePurge(x) => x.ticket = 0,
        Method::QueueDelete(x) => x.ticket = 0,
        Method::BasicConsume(x) => x.ticket = 0,
        Method::BasicPublish(x) => x.ticket = 0,
        Method::BasicGet(x) => x.ticket = 0,
        // It treats prefetch_size as reserved too (RabbitMQ refuses non-zero values anyway).
        Method::BasicQos(x) => x.prefetch_size = 0,
        Method::AccessRequestOk(x) => x.ticket = 1,
        _ => {}
    }
    // Every method with a table argument.
    let t = match m {
        Method::ConnectionStart(x) => &mut x.server_properties,
        Method::ConnectionStartOk(x) => &mut x.client_properties,
        Method::ExchangeDeclare(x) => &mut x.arguments,
        Method::ExchangeBind(x) => &mut x.arguments,
        Method::ExchangeUnbind(x) => &mut x.arguments,
        Method::QueueDeclare(x) => &mut x.arguments,
        Method::QueueBind(x) => &mut x.arguments,
        Method::QueueUnbind(x) => &mut x.arguments,
        Method::BasicConsume(x) => &mut x.arguments,
        _ => return,
    };
    normalise_table(t);
}

fn through_amq_protocol(bytes: &[u8]) -> Vec<u8> {
    let (rest, frame) = parse_frame(bytes).unwrap_or_else(|e| panic!("amq-protocol rejects our frame: {e:?}"));
    assert!(rest.is_empty(), "amq-protocol left {} bytes", rest.len());
    let (out, _) = cookie_factory::gen(gen_frame(&frame), Vec::new()).expect("amq-protocol re-encodes");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Proves every method we encode is understood by amq-protocol, and its encoding of it decodes
    /// with ours to the same (normalised) method.
    #[test]
    fn methods_agree(m in method()) {
        let mut ours = BytesMut::new();
        write_method(&mut ours, 1, &m).unwrap();
        let theirs = through_amq_protocol(&ours);
        let mut buf = BytesMut::from(&theirs[..]);
        let decoded = FrameDecoder::new(0).decode(&mut buf).unwrap().unwrap();
        let mut expected = m.clone();
        normalise_method(&mut expected);
        prop_assert_eq!(decoded, Frame::Method { channel: 1, method: expected.clone() });
        // And with tables in their canonical form, the bytes are identical.
        let mut canonical = BytesMut::new();
        write_method(&mut canonical, 1, &expected).unwrap();
        prop_assert_eq!(&canonical[..], &theirs[..]);
    }

    /// Proves content headers with all 14 properties agree both ways.
    #[test]
    fn properties_agree(p in properties(), body_size in 0u64..1_000_000) {
        let raw = p.to_bytes().unwrap();
        let mut ours = BytesMut::new();
        write_header(&mut ours, 3, 60, body_size, &raw);
        let theirs = through_amq_protocol(&ours);
        let mut buf = BytesMut::from(&theirs[..]);
        let Some(Frame::Header { channel, class_id, body_size: bs, properties }) = FrameDecoder::new(0).decode(&mut buf).unwrap() else {
            panic!("not a header frame");
        };
        prop_assert_eq!((channel, class_id, bs), (3, 60, body_size));
        let mut expected = p.clone();
        if let Some(h) = expected.headers.as_mut() {
            normalise_table(h);
        }
        prop_assert_eq!(BasicProperties::decode(&properties).unwrap(), expected);
    }
}
