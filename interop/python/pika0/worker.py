#!/usr/bin/env python
# RabbitMQ tutorial 2 for pika 0.x: fair dispatch (basic_qos prefetch 1) and manual acks; stops
# after the number of tasks given as its argument.
import os
import sys
import pika

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost', port=int(os.environ['AMQP_PORT'])))
channel = connection.channel()

channel.queue_declare(queue='task_queue', durable=True)
print(' [*] Waiting for messages. To exit press CTRL+C')
left = [int(sys.argv[1])]


def callback(ch, method, properties, body):
    print(" [x] Received %r" % body)
    print(" [x] Done")
    ch.basic_ack(delivery_tag=method.delivery_tag)
    left[0] -= 1
    if left[0] == 0:
        ch.stop_consuming()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(callback,
                      queue='task_queue')

channel.start_consuming()
