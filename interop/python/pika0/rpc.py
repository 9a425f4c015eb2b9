#!/usr/bin/env python
# RabbitMQ tutorial 6 for pika 0.x, server and client in one process: the server consumes
# rpc_queue on one connection; the client's callback queue is exclusive and server-named, and
# the reply is matched by correlation_id.
import os
import threading
import uuid
import pika

params = pika.ConnectionParameters(host='localhost', port=int(os.environ['AMQP_PORT']))


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


server = pika.BlockingConnection(params)
schannel = server.channel()
schannel.queue_declare(queue='rpc_queue')


def on_request(ch, method, props, body):
    response = fib(int(body))
    ch.basic_publish(exchange='',
                     routing_key=props.reply_to,
                     properties=pika.BasicProperties(correlation_id=props.correlation_id),
                     body=str(response))
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.stop_consuming()


schannel.basic_qos(prefetch_count=1)
schannel.basic_consume(on_request, queue='rpc_queue')
t = threading.Thread(target=schannel.start_consuming)
t.start()


class FibonacciRpcClient(object):
    def __init__(self):
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(self.on_response, no_ack=True,
                                   queue=self.callback_queue)

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(exchange='',
                                   routing_key='rpc_queue',
                                   properties=pika.BasicProperties(
                                       reply_to=self.callback_queue,
                                       correlation_id=self.corr_id,
                                   ),
                                   body=str(n))
        while self.response is None:
            self.connection.process_data_events()
        return int(self.response)


fibonacci_rpc = FibonacciRpcClient()
print(" [.] Got %r" % fibonacci_rpc.call(30))
t.join()
