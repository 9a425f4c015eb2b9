#!/usr/bin/env python
# RabbitMQ tutorial 3 for pika 0.x: a fanout exchange and an exclusive server-named queue; prints
# READY once bound, stops after one message.
import os
import pika

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost', port=int(os.environ['AMQP_PORT'])))
channel = connection.channel()

channel.exchange_declare(exchange='logs',
                         exchange_type='fanout')

result = channel.queue_declare(exclusive=True)
queue_name = result.method.queue

channel.queue_bind(exchange='logs',
                   queue=queue_name)

print('READY', flush=True)


def callback(ch, method, properties, body):
    print(" [x] %r" % body, flush=True)
    ch.stop_consuming()


channel.basic_consume(callback,
                      queue=queue_name,
                      no_ack=True)

channel.start_consuming()
