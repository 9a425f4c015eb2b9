#!/usr/bin/env python
# RabbitMQ tutorial 1 as written for pika 0.x (0.13): the consumer, with the 0.x argument order
# of basic_consume (callback first) and no_ack; stops after one message.
import os
import pika

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost', port=int(os.environ['AMQP_PORT'])))
channel = connection.channel()

channel.queue_declare(queue='hello')


def callback(ch, method, properties, body):
    print(" [x] Received %r" % body)
    ch.stop_consuming()


channel.basic_consume(callback,
                      queue='hello',
                      no_ack=True)

print(' [*] Waiting for messages. To exit press CTRL+C')
channel.start_consuming()
