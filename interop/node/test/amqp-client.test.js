// @cloudamqp/amqp-client (CloudAMQP's client for Node and browsers) against the real binary. It
// gives up on a connection after one heartbeat interval without a frame, so it needs the server's
// heartbeats every half interval, as RabbitMQ sends them.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { AMQPClient } = require('@cloudamqp/amqp-client');
const { start } = require('../broker');

let broker;
test.before(async () => { broker = await start(); });
test.after(async () => { await broker.stop(); });

test('an idle connection with heartbeat 1 s stays open', async () => {
  const conn = await new AMQPClient(`amqp://guest:guest@127.0.0.1:${broker.port}?heartbeat=1`).connect();
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.strictEqual(conn.closed, false);
  await conn.close();
});

test('publish with confirms, consume with acks, and a passive declare of a missing queue', async () => {
  const conn = await new AMQPClient(`amqp://guest:guest@127.0.0.1:${broker.port}`).connect();
  const ch = await conn.channel();
  await ch.confirmSelect();
  const q = await ch.queueDeclare('', { exclusive: true });
  assert.match(q.name, /^amq\.gen-/);
  await ch.basicPublish('', q.name, 'hello from amqp-client', { contentType: 'text/plain', headers: { n: 7 } });
  await ch.basicQos(10);
  const consumer = await ch.basicConsume(q.name, { noAck: false });
  for await (const msg of consumer.messages) {
    assert.strictEqual(msg.bodyToString(), 'hello from amqp-client');
    assert.strictEqual(msg.properties.contentType, 'text/plain');
    assert.deepStrictEqual(msg.properties.headers, { n: 7 });
    await msg.ack();
    break;
  }
  const ch2 = await conn.channel();
  await assert.rejects(ch2.queueDeclare('no-such-queue', { passive: true }), /NOT_FOUND - no queue 'no-such-queue'/);
  await conn.close();
});
