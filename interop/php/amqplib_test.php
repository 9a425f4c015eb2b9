<?php
// php-amqplib (Debian's php-amqplib), the PHP client, against the real binary: publish and get
// with properties, a consumer with prefetch and acks, confirms, a 404 channel error and a
// mandatory return. Run by interop/python/test_other_clients.py: php amqplib_test.php AMQP_PORT;
// exits non-zero on any difference, prints "done" at the end.
require_once '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Exception\AMQPProtocolChannelException;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPTable;

function check($ok, $what) {
    if (!$ok) {
        fwrite(STDERR, "FAIL: $what\n");
        exit(1);
    }
}

$conn = new AMQPStreamConnection('127.0.0.1', (int)$argv[1], 'guest', 'guest');
$ch = $conn->channel();
$ch->queue_declare('php-hello', false, false, false, true);
$msg = new AMQPMessage('Hello World!', [
    'content_type' => 'text/plain',
    'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
    'application_headers' => new AMQPTable(['n' => 7, 's' => 'x']),
]);
$ch->basic_publish($msg, '', 'php-hello');
$got = null;
for ($i = 0; $i < 50 && $got === null; $i++) {
    $got = $ch->basic_get('php-hello');
    if ($got === null) usleep(20000);
}
check($got !== null && $got->getBody() === 'Hello World!', 'basic.get body');
check($got->get('content_type') === 'text/plain', 'content type');
check($got->get('application_headers')->getNativeData() == ['n' => 7, 's' => 'x'], 'headers');
$got->ack();
echo "ok hello\n";

$ch->basic_qos(null, 5, null);
for ($i = 0; $i < 20; $i++) {
    $ch->basic_publish(new AMQPMessage("m$i"), '', 'php-hello');
}
$seen = [];
$ch->basic_consume('php-hello', 'php-consumer', false, false, false, false, function ($m) use (&$seen) {
    $seen[] = $m->getBody();
    $m->ack();
});
while (count($seen) < 20) {
    $ch->wait(null, false, 5);
}
check($seen === array_map(fn($i) => "m$i", range(0, 19)), 'consumed in order');
$ch->basic_cancel('php-consumer');
echo "ok consume\n";

$cc = $conn->channel();
$cc->confirm_select();
$acks = 0;
$cc->set_ack_handler(function ($m) use (&$acks) { $acks++; });
for ($i = 0; $i < 50; $i++) {
    $cc->basic_publish(new AMQPMessage("c$i"), '', 'php-hello');
}
$cc->wait_for_pending_acks(5);
check($acks === 50, "confirms: $acks");
echo "ok confirms\n";

$rc = $conn->channel();
$returned = null;
$rc->set_return_listener(function ($code, $text, $exchange, $key, $m) use (&$returned) {
    $returned = "$code $text " . $m->getBody();
});
$rc->basic_publish(new AMQPMessage('lost'), '', 'php-no-such-queue', true);
for ($i = 0; $i < 50 && $returned === null; $i++) {
    $rc->wait(null, true, 0.1);
}
check($returned === '312 NO_ROUTE lost', "return: $returned");
echo "ok return\n";

$ec = $conn->channel();
try {
    $ec->queue_declare('php-no-such-queue', true);
    check(false, 'passive declare of a missing queue succeeded');
} catch (AMQPProtocolChannelException $e) {
    check($e->getCode() === 404, 'reply code ' . $e->getCode());
    check($e->getMessage() === "NOT_FOUND - no queue 'php-no-such-queue' in vhost '/'", $e->getMessage());
}
echo "ok not found\n";
$ch->close();
$conn->close();
echo "done\n";
