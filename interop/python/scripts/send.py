#!/usr/bin/env python
"""RabbitMQ tutorial 1 ("Hello World!") producer, pika 1.x.

Usage: send.py [--host HOST] [--port PORT] [--queue QUEUE]
Defaults come from $AMQP_HOST / $AMQP_PORT, else localhost:5672.
"""
import argparse
import os

import pika

parser = argparse.ArgumentParser()
parser.add_argument("--host", default=os.environ.get("AMQP_HOST", "localhost"))
parser.add_argument("--port", type=int, default=int(os.environ.get("AMQP_PORT", "5672")))
parser.add_argument("--queue", default="hello")
args = parser.parse_args()

connection = pika.BlockingConnection(
    pika.ConnectionParameters(host=args.host, port=args.port))
channel = connection.channel()

channel.queue_declare(queue=args.queue)

channel.basic_publish(exchange='', routing_key=args.queue, body='Hello World!')
print(" [x] Sent 'Hello World!'", flush=True)
connection.close()
