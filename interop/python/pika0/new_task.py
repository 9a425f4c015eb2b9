#!/usr/bin/env python
# RabbitMQ tutorial 2 for pika 0.x: durable queue, persistent messages.
import os
import sys
import pika

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost', port=int(os.environ['AMQP_PORT'])))
channel = connection.channel()

channel.queue_declare(queue='task_queue', durable=True)

for message in sys.argv[1:]:
    channel.basic_publish(exchange='',
                          routing_key='task_queue',
                          body=message,
                          properties=pika.BasicProperties(
                              delivery_mode=2,  # make message persistent
                          ))
    print(" [x] Sent %r" % message)
connection.close()
