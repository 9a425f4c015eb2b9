//! Broker hot-path cost without the network: publish one 16-byte message to a queue with a no-ack
//! consumer and take the delivery, a million times. Run by hand to compare builds:
//! `cargo test --release -p warren-broker --test hot_path -- --ignored --nocapture`.

use std::time::Instant;

use amqp_codec::{BasicConsume, BasicProperties, QueueDeclare};
use broker::{Broker, Effects, Message, PublishFlags, WriteCredit};
use bytes::Bytes;

#[test]
#[ignore = "a measurement, run by hand"]
fn publish_and_deliver_cost() {
    let mut b = Broker::default();
    b.connection_open(1, "/", "guest", WriteCredit::new(i64::MAX / 4)).expect("vhost");
    b.channel_open(1, 1);
    let mut fx = Effects::default();
    b.handle(1, 1, QueueDeclare { queue: "q".into(), ..Default::default() }.into(), 1, &mut fx).expect("declare");
    b.handle(1, 1, BasicConsume { queue: "q".into(), no_ack: true, ..Default::default() }.into(), 1, &mut fx)
        .expect("consume");
    let props = Message::with_properties("", "q", &BasicProperties::default(), Bytes::from_static(b"0123456789abcdef"));
    let n = 1_000_000u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            fx.out.clear();
            b.publish(1, 1, PublishFlags::default(), props.clone(), 1, &mut fx).expect("publish");
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!("publish + deliver: {best:.1} ns per message (best of 5 x {n})");
}
