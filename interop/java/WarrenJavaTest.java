// The RabbitMQ Java client (Debian's librabbitmq-client-java) against the real binary: each
// check drives a feature end to end and throws on any difference. Run by
// interop/python/test_java_client.py, which compiles this file and starts the broker:
//
//   java -cp amqp-client.jar:slf4j-api.jar:slf4j-nop.jar:. WarrenJavaTest AMQP_PORT HTTP_PORT
//
// Prints "ok <check>" per check and exits 1 after the first failure.

import com.rabbitmq.client.*;

import java.io.IOException;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicInteger;

public class WarrenJavaTest {
    static int amqpPort;
    static int httpPort;

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        amqpPort = Integer.parseInt(args[0]);
        httpPort = Integer.parseInt(args[1]);
        LinkedHashMap<String, Check> checks = new LinkedHashMap<>();
        checks.put("hello_world_and_properties", WarrenJavaTest::helloWorldAndProperties);
        checks.put("consume_with_prefetch_and_ack", WarrenJavaTest::consumeWithPrefetchAndAck);
        checks.put("publisher_confirms", WarrenJavaTest::publisherConfirms);
        checks.put("mandatory_return", WarrenJavaTest::mandatoryReturn);
        checks.put("channel_errors_keep_the_connection", WarrenJavaTest::channelErrors);
        checks.put("exchange_types_and_exchange_bindings", WarrenJavaTest::exchangeTypes);
        checks.put("transactions", WarrenJavaTest::transactions);
        checks.put("direct_reply_to_rpc", WarrenJavaTest::directReplyTo);
        checks.put("nack_reject_recover", WarrenJavaTest::nackRejectRecover);
        checks.put("large_message", WarrenJavaTest::largeMessage);
        checks.put("exclusive_queue_locked", WarrenJavaTest::exclusiveQueueLocked);
        checks.put("consumer_cancel_notification", WarrenJavaTest::consumerCancelNotification);
        checks.put("wrong_password", WarrenJavaTest::wrongPassword);
        checks.put("automatic_recovery", WarrenJavaTest::automaticRecovery);
        for (Map.Entry<String, Check> e : checks.entrySet()) {
            try {
                e.getValue().run();
                System.out.println("ok " + e.getKey());
            } catch (Throwable t) {
                System.out.println("FAIL " + e.getKey() + ": " + t);
                t.printStackTrace(System.out);
                System.exit(1);
            }
        }
        System.exit(0);
    }

    static ConnectionFactory factory() {
        ConnectionFactory f = new ConnectionFactory();
        f.setHost("127.0.0.1");
        f.setPort(amqpPort);
        f.setUsername("guest");
        f.setPassword("guest");
        f.setAutomaticRecoveryEnabled(false);
        return f;
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void equal(Object want, Object got, String what) {
        if (!Objects.equals(want, got)) {
            throw new AssertionError(what + ": expected <" + want + "> got <" + got + ">");
        }
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    static void helloWorldAndProperties() throws Exception {
        try (Connection conn = factory().newConnection("java-hello")) {
            Channel ch = conn.createChannel();
            ch.queueDeclare("java-hello", false, false, false, null);
            Map<String, Object> headers = new HashMap<>();
            headers.put("an-int", 42);
            headers.put("a-string", "text");
            headers.put("a-bool", true);
            AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                    .contentType("text/plain").contentEncoding("utf-8").headers(headers).deliveryMode(2)
                    .priority(5).correlationId("corr").replyTo("nowhere").expiration("60000").messageId("m-1")
                    .timestamp(new Date(1_700_000_000_000L)).type("greeting").userId("guest").appId("java")
                    .build();
            ch.basicPublish("", "java-hello", props, utf8("Hello World!"));
            GetResponse r = null;
            for (int i = 0; i < 50 && r == null; i++) {
                r = ch.basicGet("java-hello", true);
                if (r == null) Thread.sleep(20);
            }
            check(r != null, "basic.get returned the message");
            equal("Hello World!", str(r.getBody()), "body");
            AMQP.BasicProperties got = r.getProps();
            equal("text/plain", got.getContentType(), "content type");
            equal("utf-8", got.getContentEncoding(), "content encoding");
            equal(2, got.getDeliveryMode(), "delivery mode");
            equal(5, got.getPriority(), "priority");
            equal("corr", got.getCorrelationId(), "correlation id");
            equal("nowhere", got.getReplyTo(), "reply to");
            equal("60000", got.getExpiration(), "expiration");
            equal("m-1", got.getMessageId(), "message id");
            equal(new Date(1_700_000_000_000L), got.getTimestamp(), "timestamp");
            equal("greeting", got.getType(), "type");
            equal("guest", got.getUserId(), "user id");
            equal("java", got.getAppId(), "app id");
            equal(42, got.getHeaders().get("an-int"), "int header");
            equal("text", got.getHeaders().get("a-string").toString(), "string header");
            equal(true, got.getHeaders().get("a-bool"), "bool header");
            equal(0, r.getMessageCount(), "message count");
            ch.queueDelete("java-hello");
        }
    }

    static void consumeWithPrefetchAndAck() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare().getQueue();
            check(q.startsWith("amq.gen-"), "server-named queue: " + q);
            for (int i = 0; i < 200; i++) {
                ch.basicPublish("", q, null, utf8("m" + i));
            }
            ch.basicQos(10);
            BlockingQueue<String> got = new LinkedBlockingQueue<>();
            AtomicInteger maxUnacked = new AtomicInteger();
            Channel cch = ch;
            ch.basicConsume(q, false, "java-consumer", new DefaultConsumer(ch) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body)
                        throws IOException {
                    got.add(str(body));
                    cch.basicAck(env.getDeliveryTag(), false);
                }
            });
            for (int i = 0; i < 200; i++) {
                String b = got.poll(5, TimeUnit.SECONDS);
                equal("m" + i, b, "delivery " + i + " in order");
            }
            equal(0L, ch.messageCount(q), "queue drained");
            equal(1L, ch.consumerCount(q), "one consumer");
            ch.basicCancel("java-consumer");
        }
    }

    static void publisherConfirms() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare("java-confirms", true, false, false, null).getQueue();
            ch.confirmSelect();
            ConcurrentSkipListSet<Long> acked = new ConcurrentSkipListSet<>();
            ch.addConfirmListener(new ConfirmListener() {
                public void handleAck(long tag, boolean multiple) {
                    if (multiple) {
                        for (long t = 1; t <= tag; t++) acked.add(t);
                    } else {
                        acked.add(tag);
                    }
                }

                public void handleNack(long tag, boolean multiple) {
                }
            });
            for (int i = 0; i < 1000; i++) {
                ch.basicPublish("", q, MessageProperties.PERSISTENT_BASIC, utf8("c" + i));
            }
            ch.waitForConfirmsOrDie(10_000);
            equal(1000, acked.size(), "every publish confirmed");
            equal(1000L, ch.messageCount(q), "all enqueued");
            ch.queueDelete(q);
        }
    }

    static void mandatoryReturn() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            CompletableFuture<String> returned = new CompletableFuture<>();
            ch.addReturnListener((code, text, exchange, key, props, body) ->
                    returned.complete(code + " " + text + " " + exchange + " " + key + " " + str(body)));
            ch.basicPublish("amq.direct", "nobody-home", true, null, utf8("lost?"));
            equal("312 NO_ROUTE amq.direct nobody-home lost?", returned.get(5, TimeUnit.SECONDS), "basic.return");
        }
    }

    static void channelErrors() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            try {
                ch.queueDeclarePassive("java-no-such-queue");
                throw new AssertionError("passive declare of a missing queue succeeded");
            } catch (IOException e) {
                ShutdownSignalException s = (ShutdownSignalException) e.getCause();
                AMQP.Channel.Close close = (AMQP.Channel.Close) s.getReason();
                equal(404, close.getReplyCode(), "reply code");
                equal("NOT_FOUND - no queue 'java-no-such-queue' in vhost '/'", close.getReplyText(), "reply text");
            }
            check(conn.isOpen(), "a channel error leaves the connection open");
            Channel ch2 = conn.createChannel();
            ch2.exchangeDeclare("java-x", "direct", false);
            try {
                ch2.exchangeDeclare("java-x", "fanout", false);
                throw new AssertionError("redeclaring with another type succeeded");
            } catch (IOException e) {
                AMQP.Channel.Close close = (AMQP.Channel.Close) ((ShutdownSignalException) e.getCause()).getReason();
                equal(406, close.getReplyCode(), "inequivalent type");
            }
            Channel ch3 = conn.createChannel();
            ch3.exchangeDelete("java-x");
        }
    }

    static void exchangeTypes() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            ch.exchangeDeclare("java-topic", BuiltinExchangeType.TOPIC);
            ch.exchangeDeclare("java-headers", BuiltinExchangeType.HEADERS);
            ch.exchangeDeclare("java-fanout", BuiltinExchangeType.FANOUT);
            String tq = ch.queueDeclare().getQueue();
            String hq = ch.queueDeclare().getQueue();
            ch.queueBind(tq, "java-topic", "a.*.c");
            Map<String, Object> match = new HashMap<>();
            match.put("x-match", "all");
            match.put("format", "pdf");
            match.put("type", "report");
            ch.queueBind(hq, "java-headers", "", match);
            ch.exchangeBind("java-topic", "java-fanout", "");
            ch.basicPublish("java-fanout", "a.b.c", null, utf8("via-fanout"));
            ch.basicPublish("java-topic", "a.b.c.d", null, utf8("no-match"));
            Map<String, Object> h = new HashMap<>();
            h.put("format", "pdf");
            h.put("type", "report");
            ch.basicPublish("java-headers", "", new AMQP.BasicProperties.Builder().headers(h).build(), utf8("hdr"));
            h.put("type", "log");
            ch.basicPublish("java-headers", "", new AMQP.BasicProperties.Builder().headers(h).build(), utf8("nope"));
            equal("via-fanout", str(getWithin(ch, tq).getBody()), "exchange-to-exchange then topic");
            equal("hdr", str(getWithin(ch, hq).getBody()), "headers x-match all");
            check(ch.basicGet(tq, true) == null && ch.basicGet(hq, true) == null, "nothing else routed");
            ch.exchangeUnbind("java-topic", "java-fanout", "");
            ch.exchangeDelete("java-topic");
            ch.exchangeDelete("java-headers");
            ch.exchangeDelete("java-fanout");
        }
    }

    static GetResponse getWithin(Channel ch, String q) throws Exception {
        return getWithin(ch, q, true);
    }

    /// basic.get, retried for up to 2 s.
    static GetResponse getWithin(Channel ch, String q, boolean autoAck) throws Exception {
        for (int i = 0; i < 100; i++) {
            GetResponse r = ch.basicGet(q, autoAck);
            if (r != null) return r;
            Thread.sleep(20);
        }
        throw new AssertionError("nothing arrived in " + q);
    }

    static void transactions() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare().getQueue();
            ch.txSelect();
            ch.basicPublish("", q, null, utf8("rolled back"));
            ch.txRollback();
            equal(0L, ch.messageCount(q), "rolled back publish not enqueued");
            ch.basicPublish("", q, null, utf8("committed"));
            ch.txCommit();
            equal("committed", str(getWithin(ch, q).getBody()), "committed publish");
        }
    }

    static void directReplyTo() throws Exception {
        try (Connection server = factory().newConnection(); Connection client = factory().newConnection()) {
            Channel sch = server.createChannel();
            sch.queueDeclare("java-rpc", false, false, true, null);
            sch.basicConsume("java-rpc", true, new DefaultConsumer(sch) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body)
                        throws IOException {
                    AMQP.BasicProperties reply = new AMQP.BasicProperties.Builder()
                            .correlationId(p.getCorrelationId()).build();
                    getChannel().basicPublish("", p.getReplyTo(), reply, utf8("re: " + str(body)));
                }
            });
            Channel cch = client.createChannel();
            CompletableFuture<String> answer = new CompletableFuture<>();
            cch.basicConsume("amq.rabbitmq.reply-to", true, new DefaultConsumer(cch) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body) {
                    answer.complete(p.getCorrelationId() + " " + str(body));
                }
            });
            AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
                    .replyTo("amq.rabbitmq.reply-to").correlationId("42").build();
            cch.basicPublish("", "java-rpc", props, utf8("ping"));
            equal("42 re: ping", answer.get(5, TimeUnit.SECONDS), "RPC answer");
        }
    }

    static void nackRejectRecover() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare().getQueue();
            for (String b : new String[] {"a", "b", "c"}) {
                ch.basicPublish("", q, null, utf8(b));
            }
            GetResponse a = getWithin(ch, q, false);
            GetResponse b = getWithin(ch, q, false);
            ch.basicNack(b.getEnvelope().getDeliveryTag(), true, true);
            GetResponse again = getWithin(ch, q, false);
            equal("a", str(again.getBody()), "nack multiple requeue puts a back first");
            check(again.getEnvelope().isRedeliver(), "redelivered flag");
            ch.basicReject(again.getEnvelope().getDeliveryTag(), false);
            GetResponse next = getWithin(ch, q, false);
            equal("b", str(next.getBody()), "rejected without requeue is gone");
            ch.basicRecover(true);
            equal("b", str(getWithin(ch, q, false).getBody()), "recover requeues unacked");
            check(a != null, "first get");
        }
    }

    static void largeMessage() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            String q = ch.queueDeclare().getQueue();
            byte[] body = new byte[5 * 1024 * 1024 + 17];
            new Random(7).nextBytes(body);
            ch.basicPublish("", q, null, body);
            check(Arrays.equals(body, getWithin(ch, q).getBody()), "5 MiB body arrives intact");
        }
    }

    static void exclusiveQueueLocked() throws Exception {
        try (Connection owner = factory().newConnection(); Connection other = factory().newConnection()) {
            Channel och = owner.createChannel();
            och.queueDeclare("java-exclusive", false, true, false, null);
            Channel ch = other.createChannel();
            try {
                ch.queueDeclarePassive("java-exclusive");
                throw new AssertionError("another connection used an exclusive queue");
            } catch (IOException e) {
                AMQP.Channel.Close close = (AMQP.Channel.Close) ((ShutdownSignalException) e.getCause()).getReason();
                equal(405, close.getReplyCode(), "RESOURCE_LOCKED");
            }
        }
    }

    static void consumerCancelNotification() throws Exception {
        try (Connection conn = factory().newConnection()) {
            Channel ch = conn.createChannel();
            ch.queueDeclare("java-cancelled", false, false, false, null);
            CompletableFuture<String> cancelled = new CompletableFuture<>();
            ch.basicConsume("java-cancelled", true, "java-cc", new DefaultConsumer(ch) {
                @Override
                public void handleCancel(String tag) {
                    cancelled.complete(tag);
                }
            });
            Channel other = conn.createChannel();
            other.queueDelete("java-cancelled");
            equal("java-cc", cancelled.get(5, TimeUnit.SECONDS), "server-sent basic.cancel");
        }
    }

    static void wrongPassword() throws Exception {
        ConnectionFactory f = factory();
        f.setPassword("not-the-password");
        try {
            f.newConnection().close();
            throw new AssertionError("logged in with a wrong password");
        } catch (AuthenticationFailureException e) {
            check(e.getMessage().contains("ACCESS_REFUSED"), "access refused: " + e.getMessage());
        }
    }

    /// Closes the connection from the broker side (the management API) and checks that the
    /// client's automatic recovery reconnects, redeclares its server-named queue, binding and
    /// consumer, and that messages flow again.
    static void automaticRecovery() throws Exception {
        ConnectionFactory f = factory();
        f.setAutomaticRecoveryEnabled(true);
        f.setTopologyRecoveryEnabled(true);
        f.setNetworkRecoveryInterval(200);
        try (Connection conn = f.newConnection("java-recovering")) {
            CountDownLatch recovered = new CountDownLatch(1);
            ((Recoverable) conn).addRecoveryListener(new RecoveryListener() {
                public void handleRecovery(Recoverable r) {
                    recovered.countDown();
                }

                public void handleRecoveryStarted(Recoverable r) {
                }
            });
            Channel ch = conn.createChannel();
            ch.exchangeDeclare("java-recovery-x", "fanout", false, true, null);
            String q = ch.queueDeclare().getQueue();
            ch.queueBind(q, "java-recovery-x", "");
            BlockingQueue<String> got = new LinkedBlockingQueue<>();
            ch.basicConsume(q, true, new DefaultConsumer(ch) {
                @Override
                public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body) {
                    got.add(str(body));
                }
            });
            ch.basicPublish("java-recovery-x", "", null, utf8("before"));
            equal("before", got.poll(5, TimeUnit.SECONDS), "before the close");
            closeGuestConnections();
            check(recovered.await(10, TimeUnit.SECONDS), "the connection recovered");
            ch.basicPublish("java-recovery-x", "", null, utf8("after"));
            equal("after", got.poll(5, TimeUnit.SECONDS), "after recovery");
        }
    }

    /// Closes every connection of user guest with 320 through the management API
    /// (DELETE /api/connections/username/guest): only the recovering one is open then.
    static void closeGuestConnections() throws Exception {
        String auth = "Basic " + Base64.getEncoder().encodeToString(utf8("guest:guest"));
        HttpURLConnection del = (HttpURLConnection) new URL(
                "http://127.0.0.1:" + httpPort + "/api/connections/username/guest").openConnection();
        del.setRequestMethod("DELETE");
        del.setRequestProperty("Authorization", auth);
        equal(204, del.getResponseCode(), "DELETE /api/connections/username/guest");
    }
}
