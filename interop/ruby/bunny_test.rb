# Bunny (Debian's ruby-bunny), the Ruby client, against the real binary: properties, confirms,
# a topic exchange with a subscriber, a 404 channel error, a mandatory return and transactions.
# Run by interop/python/test_other_clients.py: ruby bunny_test.rb AMQP_PORT; raises on any
# difference, prints "done" at the end.
require "bunny"
port = Integer(ARGV[0])
conn = Bunny.new(host: "127.0.0.1", port: port, user: "guest", password: "guest")
conn.start
ch = conn.create_channel
q = ch.queue("bunny-hello", auto_delete: true)
x = ch.default_exchange
x.publish("Hello World!", routing_key: q.name, headers: {"k" => 1}, content_type: "text/plain", persistent: true, priority: 3)
sleep 0.1
di, props, body = q.pop(manual_ack: true)
raise "body #{body.inspect}" unless body == "Hello World!"
raise "headers #{props.headers.inspect}" unless props.headers == {"k" => 1}
ch.ack(di.delivery_tag)
puts "ok hello"
# confirms
ch.confirm_select
100.times { |i| x.publish("c#{i}", routing_key: q.name) }
raise "confirms" unless ch.wait_for_confirms
puts "ok confirms (#{q.message_count})"
q.purge
# topic + consumer
t = ch.topic("bunny-topic", auto_delete: true)
tq = ch.queue("", exclusive: true).bind(t, routing_key: "a.#")
got = Queue.new
tq.subscribe(manual_ack: true) { |d, p, b| got << b; ch.ack(d.delivery_tag) }
t.publish("m1", routing_key: "a.b.c")
t.publish("m2", routing_key: "b.c")
t.publish("m3", routing_key: "a")
r = [got.pop, got.pop]
raise "topic #{r}" unless r == ["m1", "m3"]
puts "ok topic"
# errors
ch2 = conn.create_channel
begin
  ch2.queue("bunny-nope", passive: true)
  raise "no error"
rescue Bunny::NotFound => e
  raise e.message unless e.message.include?("NOT_FOUND - no queue 'bunny-nope' in vhost '/'")
end
puts "ok not found"
# return
ch3 = conn.create_channel
returned = Queue.new
dx = ch3.default_exchange
dx.on_return { |ri, p, b| returned << [ri.reply_code, ri.reply_text, b] }
dx.publish("lost", routing_key: "no-such-queue-bunny", mandatory: true)
rv = returned.pop
raise "return #{rv}" unless rv == [312, "NO_ROUTE", "lost"]
puts "ok return"
# tx
ch4 = conn.create_channel
ch4.tx_select
q4 = ch4.queue("", exclusive: true)
ch4.default_exchange.publish("tx", routing_key: q4.name)
ch4.tx_rollback
raise "rolled back" unless q4.message_count == 0
ch4.default_exchange.publish("tx2", routing_key: q4.name)
ch4.tx_commit
sleep 0.05
raise "commit" unless q4.message_count == 1
puts "ok tx"
conn.close
puts "done"
