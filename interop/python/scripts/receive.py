#!/usr/bin/env python
"""RabbitMQ tutorial 1 ("Hello World!") consumer, pika 1.x.

Usage: receive.py [--host HOST] [--port PORT] [--queue QUEUE] [--once]
Defaults come from $AMQP_HOST / $AMQP_PORT, else localhost:5672.
With --once it exits (status 0) after the first message.
"""
import argparse
import os
import sys

import pika


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=os.environ.get("AMQP_HOST", "localhost"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("AMQP_PORT", "5672")))
    parser.add_argument("--queue", default="hello")
    parser.add_argument("--once", action="store_true", help="exit after one message")
    args = parser.parse_args()

    connection = pika.BlockingConnection(
        pika.ConnectionParameters(host=args.host, port=args.port))
    channel = connection.channel()

    channel.queue_declare(queue=args.queue)

    def callback(ch, method, properties, body):
        print(" [x] Received %r" % body, flush=True)
        if args.once:
            ch.stop_consuming()

    channel.basic_consume(queue=args.queue, on_message_callback=callback, auto_ack=True)

    print(' [*] Waiting for messages. To exit press CTRL+C', flush=True)
    channel.start_consuming()
    connection.close()


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        print('Interrupted')
        sys.exit(0)
