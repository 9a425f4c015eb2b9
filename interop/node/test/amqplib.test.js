// amqplib against the real binary. Node resolves `localhost` to ::1 first, so these tests also
// prove Warren listens on IPv6 as well as IPv4 by default.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('amqplib');
const { start } = require('../broker');

let broker;
test.before(async () => { broker = await start(); });
test.after(async () => { await broker.stop(); });

test('hello world through localhost (IPv6 ::1) and 127.0.0.1', async () => {
  for (const host of ['localhost', '::1', '127.0.0.1']) {
    const conn = await amqp.connect({ hostname: host, port: broker.port, username: 'guest', password: 'guest' });
    const ch = await conn.createChannel();
    const q = `hello-${host.replace(/\W/g, '')}`;
    await ch.assertQueue(q, { durable: false });
    ch.sendToQueue(q, Buffer.from('Hello World!'));
    const got = await new Promise((resolve) => {
      ch.consume(q, (msg) => resolve(msg.content.toString()), { noAck: true });
    });
    assert.strictEqual(got, 'Hello World!');
    await conn.close();
  }
});

test('confirm channel, topic routing, properties and acks', async () => {
  const conn = await amqp.connect(`amqp://localhost:${broker.port}`);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange('node-topic', 'topic', { durable: false });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-/);
  await ch.bindQueue(queue, 'node-topic', 'kern.*');
  await new Promise((resolve, reject) => {
    ch.publish('node-topic', 'kern.critical', Buffer.from('disk full'), {
      contentType: 'text/plain', headers: { n: 42, s: 'x', nested: { a: [1, 'b'] } }, priority: 3, messageId: 'm1',
    }, (err) => (err ? reject(err) : resolve()));
  });
  ch.publish('node-topic', 'user.info', Buffer.from('unrouted'));
  await ch.waitForConfirms();
  await ch.prefetch(10);
  const msg = await new Promise((resolve) => ch.consume(queue, resolve));
  assert.strictEqual(msg.content.toString(), 'disk full');
  assert.strictEqual(msg.fields.routingKey, 'kern.critical');
  assert.strictEqual(msg.properties.contentType, 'text/plain');
  assert.strictEqual(msg.properties.priority, 3);
  assert.strictEqual(msg.properties.messageId, 'm1');
  assert.deepStrictEqual(msg.properties.headers, { n: 42, s: 'x', nested: { a: [1, 'b'] } });
  ch.ack(msg);
  await conn.close();
});

test('passive declare of a missing queue closes the channel with 404', async () => {
  const conn = await amqp.connect(`amqp://localhost:${broker.port}`);
  const ch = await conn.createChannel();
  const closed = new Promise((resolve) => ch.once('error', resolve));
  await assert.rejects(ch.checkQueue('no-such-queue'), /404/);
  const err = await closed;
  assert.match(err.message, /NOT_FOUND - no queue 'no-such-queue' in vhost '\/'/);
  await conn.close();
});

test('closing right after filling the write buffer: close-ok, no reset', async () => {
  // amqplib multiplexes channels, so its connection.close can overtake publishes still queued on
  // channel 1; the server must keep reading until the client closes the socket.
  const conn = await amqp.connect(`amqp://127.0.0.1:${broker.port}`);
  const errors = [];
  conn.on('error', (e) => errors.push(e));
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  let n = 0;
  while (ch.sendToQueue(queue, Buffer.from('x'.repeat(20)))) n++;
  assert.ok(n > 100);
  await conn.close();
  assert.deepStrictEqual(errors, []);
});
