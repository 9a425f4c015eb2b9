"""Other Python clients against the real binary: kombu (Celery's messaging layer) with its
SimpleQueue, producers/consumers over a topic exchange and its pidbox-style fanout, and aio-pika
(asyncio) with confirms, a robust connection, RPC over direct reply-to and a transaction."""

import asyncio
import aio_pika
import kombu
import pytest


def url(broker):
    return "amqp://guest:guest@127.0.0.1:%d//" % broker.port


def test_kombu_simple_queue(broker, uniq):
    with kombu.Connection(url(broker)) as conn:
        q = conn.SimpleQueue(uniq)
        q.put({"hello": "world", "n": 1})
        msg = q.get(timeout=5)
        assert msg.payload == {"hello": "world", "n": 1}
        msg.ack()
        q.close()


def test_kombu_topic_exchange_producer_consumer(broker, uniq):
    exchange = kombu.Exchange("tasks-" + uniq, type="topic", durable=True)
    queue = kombu.Queue(uniq, exchange, routing_key="task.#", durable=True,
                        queue_arguments={"x-max-priority": 10}, message_ttl=60)
    got = []
    with kombu.Connection(url(broker)) as conn:
        with conn.Consumer(queue, callbacks=[lambda body, m: (got.append(body), m.ack())], accept=["json"]):
            producer = conn.Producer(serializer="json")
            for i in range(5):
                producer.publish({"i": i}, exchange=exchange, routing_key="task.run", declare=[queue],
                                 priority=i, retry=True)
            while len(got) < 5:
                conn.drain_events(timeout=5)
    assert sorted(b["i"] for b in got) == list(range(5))


def test_kombu_fanout_broadcast(broker, uniq):
    exchange = kombu.Exchange("bcast-" + uniq, type="fanout", auto_delete=True)
    queues = [kombu.Queue("%s-%d" % (uniq, i), exchange, exclusive=True) for i in range(3)]
    got = []
    with kombu.Connection(url(broker)) as conn:
        with conn.Consumer(queues, callbacks=[lambda body, m: (got.append(body), m.ack())]):
            conn.Producer().publish("ping", exchange=exchange, routing_key="")
            while len(got) < 3:
                conn.drain_events(timeout=5)
    assert got == ["ping"] * 3


def test_py_amqp_queue_delete_on_the_consuming_channel(broker, uniq):
    """py-amqp (kombu's transport) deletes a queue from the channel that consumes from it: it
    waits for queue.delete-ok and raises if the server's basic.cancel comes first, as kombu's
    integration tests found; RabbitMQ answers delete-ok first. The cancel still follows."""
    import amqp

    conn = amqp.Connection("127.0.0.1:%d" % broker.port, userid="guest", password="guest")
    conn.connect()
    try:
        ch = conn.channel()
        ch.queue_declare(uniq)
        ch.basic_consume(uniq, callback=lambda m: None)  # no on_cancel, as kombu's Consumer
        ch.queue_delete(uniq)  # raised ConsumerCancelled when the cancel came first
        with pytest.raises(amqp.exceptions.ConsumerCancelled):
            conn.drain_events(timeout=5)
    finally:
        conn.close()


def test_aio_pika_confirms_rpc_and_tx(broker, uniq):
    async def main():
        conn = await aio_pika.connect_robust(url(broker))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue(uniq, durable=True)
            for i in range(10):
                await ch.default_exchange.publish(
                    aio_pika.Message(b"m%d" % i, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=uniq)
            got = []
            async with q.iterator() as it:
                async for m in it:
                    async with m.process():
                        got.append(m.body)
                    if len(got) == 10:
                        break
            assert got == [b"m%d" % i for i in range(10)]

            # RPC over direct reply-to.
            server_ch = await conn.channel()
            rpc_q = await server_ch.declare_queue("rpc-" + uniq, auto_delete=True)

            async def serve(m: aio_pika.abc.AbstractIncomingMessage):
                async with m.process():
                    await server_ch.default_exchange.publish(
                        aio_pika.Message(m.body.upper(), correlation_id=m.correlation_id), routing_key=m.reply_to)

            await rpc_q.consume(serve)
            client_ch = await conn.channel()
            reply = asyncio.get_running_loop().create_future()

            async def on_reply(m: aio_pika.abc.AbstractIncomingMessage):
                reply.set_result((m.correlation_id, m.body))

            rq = await client_ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
            await rq.consume(on_reply, no_ack=True)
            await client_ch.default_exchange.publish(
                aio_pika.Message(b"hello", correlation_id="c1", reply_to="amq.rabbitmq.reply-to"),
                routing_key="rpc-" + uniq)
            assert await asyncio.wait_for(reply, 5) == ("c1", b"HELLO")

            # A transaction: nothing is visible before commit.
            tx_ch = await conn.channel(publisher_confirms=False)
            tx = tx_ch.transaction()
            await tx.select()
            await tx_ch.default_exchange.publish(aio_pika.Message(b"tx"), routing_key=uniq)
            assert (await q.declare()).message_count == 0
            await tx.commit()
            await asyncio.sleep(0.05)
            assert (await q.declare()).message_count == 1

    asyncio.run(main())
