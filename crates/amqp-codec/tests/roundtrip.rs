//! Property tests of the codec: every method and property set survives encode → decode, arbitrary
//! bytes never panic, and a stream split at every byte boundary decodes to the same frames.

#![allow(clippy::unwrap_used)]

use amqp_codec::frame::{write_header, write_method, FrameDecoder};
use amqp_codec::generated_arbitrary::method;
use amqp_codec::properties::arbitrary::properties;
use amqp_codec::{BasicProperties, Frame, Method, PropertiesSummary};
use bytes::BytesMut;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Proves every method (all classes, RabbitMQ extensions included) round-trips through a frame.
    #[test]
    fn method_round_trip(m in method(), channel in any::<u16>()) {
        let mut buf = BytesMut::new();
        write_method(&mut buf, channel, &m).unwrap();
        let decoded = FrameDecoder::new(0).decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(decoded, Frame::Method { channel, method: m });
        prop_assert!(buf.is_empty());
    }

    /// Proves the 14 basic properties round-trip and the summary agrees with the full decode.
    #[test]
    fn properties_round_trip(p in properties()) {
        let raw = p.to_bytes().unwrap();
        prop_assert_eq!(BasicProperties::decode(&raw).unwrap(), p.clone());
        let s = PropertiesSummary::scan(&raw).unwrap();
        prop_assert_eq!(s.delivery_mode, p.delivery_mode);
        prop_assert_eq!(s.priority, p.priority);
        prop_assert_eq!(s.expiration.map(|sp| raw[sp.0 as usize..sp.1 as usize].to_vec()), p.expiration.map(|e| e.into_bytes()));
    }

    /// Proves arbitrary bytes never panic the frame decoder, method decoder or property scanner.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&data[..]);
        let d = FrameDecoder::new(4096);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = Method::decode(&data);
        let _ = PropertiesSummary::scan(&data);
        let _ = BasicProperties::decode(&data);
    }

    /// Proves a method-frame payload with arbitrary arguments never panics the decoder.
    #[test]
    fn arbitrary_arguments_never_panic(class in prop::sample::select(vec![10u16, 20, 40, 50, 60, 85, 90]), mid in 0u16..130, data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class.to_be_bytes());
        payload.extend_from_slice(&mid.to_be_bytes());
        payload.extend_from_slice(&data);
        let _ = Method::decode(&payload);
    }

    /// Proves a stream of frames split at any byte boundary decodes to the same frames.
    #[test]
    fn split_at_every_boundary(ms in proptest::collection::vec(method(), 1..4), p in properties()) {
        let mut whole = BytesMut::new();
        for m in &ms {
            write_method(&mut whole, 3, m).unwrap();
        }
        let raw = p.to_bytes().unwrap();
        write_header(&mut whole, 3, 60, 5, &raw);
        let d = FrameDecoder::new(0);
        let expected = {
            let mut b = whole.clone();
            let mut v = Vec::new();
            while let Some(f) = d.decode(&mut b).unwrap() { v.push(f); }
            v
        };
        prop_assert_eq!(expected.len(), ms.len() + 1);
        for cut in 0..whole.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            buf.extend_from_slice(&whole[..cut]);
            while let Some(f) = d.decode(&mut buf).unwrap() { got.push(f); }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(f) = d.decode(&mut buf).unwrap() { got.push(f); }
            prop_assert_eq!(&got, &expected);
        }
    }
}
