//! Broker state as RabbitMQ's JSON objects (same field names). Called under the broker lock:
//! these only read.

use amqp_codec::{FieldTable, FieldValue};
use base64::Engine;
use broker::exchange::Destination;
use broker::{Broker, Exchange, Queue};
use serde_json::{json, Map, Value};

use crate::{ApiError, Identity};

pub fn field_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(i) => json!(i),
        FieldValue::U8(i) => json!(i),
        FieldValue::I16(i) => json!(i),
        FieldValue::U16(i) => json!(i),
        FieldValue::I32(i) => json!(i),
        FieldValue::U32(i) => json!(i),
        FieldValue::I64(i) | FieldValue::I64L(i) => json!(i),
        FieldValue::F32(f) => json!(f),
        FieldValue::F64(f) => json!(f),
        FieldValue::Decimal { scale, value } => json!(*value as f64 / 10f64.powi(*scale as i32)),
        FieldValue::LongStr(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        },
        FieldValue::Array(a) => Value::Array(a.iter().map(field_value).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => field_table(t),
        FieldValue::Void => Value::Null,
        FieldValue::ByteArray(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

pub fn field_table(t: &FieldTable) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.to_owned(), field_value(v))).collect())
}

/// A JSON value as an AMQP field value, as RabbitMQ converts `arguments`.
pub fn to_field_value(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::from(s.as_str()),
        Value::Array(a) => FieldValue::Array(a.iter().map(to_field_value).collect()),
        Value::Object(o) => FieldValue::Table(to_field_table(o)),
    }
}

pub fn to_field_table(o: &Map<String, Value>) -> FieldTable {
    FieldTable(o.iter().map(|(k, v)| (k.clone(), to_field_value(v))).collect())
}

/// `arguments` of a request body: an object, or absent.
pub fn arguments(body: &Map<String, Value>) -> Result<FieldTable, ApiError> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(Value::Object(o)) => Ok(to_field_table(o)),
        Some(_) => Err(ApiError::bad_request("arguments must be an object")),
    }
}

pub fn may_see_vhost(b: &Broker, who: &Identity, vhost: &str) -> bool {
    who.is_monitor() || b.auth().permissions_of(vhost, &who.name).is_some()
}

/// RabbitMQ's `message_stats` object: each counter that is not zero with its
/// `<name>_details.rate` (per second over the last sampling interval), and `deliver_get`.
pub fn message_stats(s: &broker::stats::MessageStats) -> Value {
    let mut o = Map::new();
    for (stat, count, rate) in s.nonzero() {
        o.insert(stat.name().into(), json!(count));
        o.insert(format!("{}_details", stat.name()), json!({"rate": rate}));
    }
    if s.deliver_get() != 0 {
        o.insert("deliver_get".into(), json!(s.deliver_get()));
        o.insert("deliver_get_details".into(), json!({"rate": s.deliver_get_rate()}));
    }
    Value::Object(o)
}

/// One vhost's limits as `GET /api/vhost-limits` lists them.
pub fn vhost_limits(vhost: &str, l: &broker::limits::VhostLimits) -> Value {
    json!({"vhost": vhost, "value": limits_json(l.entries())})
}

pub fn vhost(b: &Broker, name: &str) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    if let Some(v) = b.vhosts.get(name) {
        for qid in v.queues.values() {
            if let Some(q) = b.queues.get(qid) {
                ready += q.ready_len() as u64;
                unacked += q.unacked_count as u64;
            }
        }
    }
    let meta = b.auth().vhost_metadata.get(name).cloned().unwrap_or_default();
    let dqt = if meta.default_queue_type.is_empty() { "classic" } else { meta.default_queue_type.as_str() };
    json!({
        "name": name,
        "description": meta.description,
        "tags": meta.tags,
        "metadata": {"description": meta.description, "tags": meta.tags, "default_queue_type": dqt},
        "default_queue_type": dqt,
        "tracing": b.is_tracing(name),
        // RabbitMQ: each node's state of the vhost; this node runs every vhost it has.
        "cluster_state": {b.config.node_name.clone(): "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_stats": message_stats(&b.vhost_stats(name)),
    })
}

pub fn exchange(b: &Broker, vhost: &str, x: &Exchange) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": field_table(&x.arguments),
        "user_who_performed_action": "rmq-internal",
        "policy": b.exchange_policy(vhost, x),
        "message_stats": message_stats(&x.stats),
    })
}

pub fn queue(b: &Broker, node: &str, q: &Queue) -> Value {
    let ready = q.ready_len() as u64;
    let unacked = q.unacked_count as u64;
    let unacked_bytes: usize = if unacked == 0 {
        0
    } else {
        b.channels
            .values()
            .flat_map(|c| c.unacked.iter())
            .filter(|u| u.queue == q.id)
            .map(|u| u.entry.message.body.len())
            .sum()
    };
    let owner = q.exclusive_owner.and_then(|c| b.connection_meta(c)).map(|m| m.name.clone());
    let (policy, operator_policy) = b.queue_policies(q);
    let mut v = json!({
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": field_table(&q.arguments),
        "node": node,
        "state": "running",
        "type": queue_type(q),
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes": q.ready.bytes() + unacked_bytes,
        "message_bytes_ready": q.ready.bytes(),
        "message_bytes_unacknowledged": unacked_bytes,
        "consumers": q.consumers.len(),
        "consumer_capacity": q.capacity.value(!q.consumers.is_empty()),
        "consumer_utilisation": q.capacity.value(!q.consumers.is_empty()),
        "policy": policy,
        "operator_policy": operator_policy,
        "effective_policy_definition": {},
        "exclusive_consumer_tag": q.consumers.iter().find(|c| c.exclusive).map(|c| c.tag.to_string()),
        "message_stats": message_stats(&q.stats),
    });
    if let (Some(owner), Some(o)) = (owner, v.as_object_mut()) {
        o.insert("owner_pid_details".into(), json!({"name": owner}));
    }
    if let (true, Some(o)) = (queue_type(q) != "classic", v.as_object_mut()) {
        // Replicated types list their replicas: on a single node, this node alone.
        o.insert("leader".into(), json!(node));
        o.insert("members".into(), json!([node]));
        o.insert("online".into(), json!([node]));
    }
    v
}

/// Every binding in `vhost`, the default exchange's implicit ones first (as RabbitMQ lists).
pub fn bindings(b: &Broker, vhost: &str) -> Vec<Value> {
    let Some(v) = b.vhosts.get(vhost) else { return Vec::new() };
    let mut out = Vec::new();
    let mut queues: Vec<&String> = v.queues.keys().collect();
    queues.sort();
    for q in queues {
        out.push(binding_json(vhost, "", q, "queue", q, &FieldTable::new()));
    }
    let mut xs: Vec<&Exchange> = v.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        for bd in &x.bindings {
            let (dest, kind) = match &bd.destination {
                Destination::Queue(id) => match b.queues.get(id) {
                    Some(q) => (q.name.clone(), "queue"),
                    None => continue,
                },
                Destination::Exchange(e) => (e.clone(), "exchange"),
            };
            out.push(binding_json(vhost, &x.name, &dest, kind, &bd.routing_key, &bd.arguments));
        }
    }
    out
}

pub fn binding_json(vhost: &str, source: &str, dest: &str, kind: &str, rk: &str, args: &FieldTable) -> Value {
    json!({
        "source": source,
        "vhost": vhost,
        "destination": dest,
        "destination_type": kind,
        "routing_key": rk,
        "arguments": field_table(args),
        "properties_key": properties_key(rk, args),
    })
}

/// RabbitMQ's `properties_key`: the routing key (percent-encoded, `~` when empty) when there
/// are no arguments, else the routing key, `~` and a digest of the arguments.
pub fn properties_key(rk: &str, args: &FieldTable) -> String {
    // Unreserved URI characters stay as they are (RFC 3986), as RabbitMQ's encoding leaves them.
    const ESCAPED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let key = percent_encoding::utf8_percent_encode(rk, ESCAPED).to_string();
    if args.is_empty() {
        return if rk.is_empty() { "~".into() } else { key };
    }
    // FNV-1a over the arguments' JSON: stable across runs, short, enough to tell bindings apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in field_table(args).to_string().bytes() {
        h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_be_bytes());
    format!("{key}~{digest}")
}

pub fn connections(b: &Broker, node: &str, who: &Identity) -> Vec<Value> {
    let mut out: Vec<(u64, Value)> = Vec::new();
    for (id, c) in &b.connections {
        if *id >= broker::admin::INTERNAL_CONNECTION_BASE {
            continue;
        }
        if !who.is_monitor() && c.user != who.name {
            continue;
        }
        let meta = b.connection_meta(*id).cloned().unwrap_or_default();
        let channels = b.channels.keys().filter(|(cid, _)| cid == id).count();
        let user_provided = meta.client_properties.get("connection_name").and_then(|v| v.as_str()).map(str::to_owned);
        out.push((
            *id,
            json!({
                "name": meta.name,
                "node": node,
                "vhost": c.vhost,
                "user": c.user,
                "user_who_performed_action": c.user,
                "state": "running",
                "type": "network",
                "protocol": "AMQP 0-9-1",
                "auth_mechanism": meta.auth_mechanism,
                "ssl": meta.tls,
                "channels": channels,
                "channel_max": meta.channel_max,
                "frame_max": meta.frame_max,
                "timeout": meta.heartbeat_secs,
                "peer_host": meta.peer_host,
                "peer_port": meta.peer_port,
                "host": meta.host,
                "port": meta.port,
                "connected_at": meta.connected_at_ms,
                "client_properties": field_table(&meta.client_properties),
                "user_provided_name": user_provided,
                "recv_oct": meta.io.recv_oct.load(std::sync::atomic::Ordering::Relaxed),
                "recv_cnt": meta.io.recv_cnt.load(std::sync::atomic::Ordering::Relaxed),
                "send_oct": meta.io.send_oct.load(std::sync::atomic::Ordering::Relaxed),
                "send_cnt": meta.io.send_cnt.load(std::sync::atomic::Ordering::Relaxed),
            }),
        ));
    }
    out.sort_by_key(|(id, _)| *id);
    out.into_iter().map(|(_, v)| v).collect()
}

/// The connection id named `name` (as listed), if `who` may see it.
pub fn find_connection(b: &Broker, who: &Identity, name: &str) -> Option<u64> {
    b.connections.iter().find_map(|(id, c)| {
        let meta = b.connection_meta(*id)?;
        (meta.name == name && (who.is_monitor() || c.user == who.name)).then_some(*id)
    })
}

fn channel_name(b: &Broker, conn: u64, ch: u16) -> String {
    let conn_name = b.connection_meta(conn).map(|m| m.name.clone()).unwrap_or_default();
    format!("{conn_name} ({ch})")
}

pub fn channels(b: &Broker, node: &str, who: &Identity, only_conn: Option<u64>) -> Vec<Value> {
    let mut keys: Vec<&(u64, u16)> = b.channels.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let (conn, ch) = *key;
        if conn >= broker::admin::INTERNAL_CONNECTION_BASE || only_conn.is_some_and(|c| c != conn) {
            continue;
        }
        let Some(state) = b.connections.get(&conn) else { continue };
        if !who.is_monitor() && state.user != who.name {
            continue;
        }
        let c = &b.channels[key];
        let meta = b.connection_meta(conn).cloned().unwrap_or_default();
        out.push(json!({
            "name": channel_name(b, conn, ch),
            "number": ch,
            "node": node,
            "vhost": state.vhost,
            "user": state.user,
            "user_who_performed_action": state.user,
            "state": "running",
            "connection_details": {"name": meta.name, "peer_host": meta.peer_host, "peer_port": meta.peer_port},
            "consumer_count": c.consumers.len(),
            "messages_unacknowledged": c.unacked.len(),
            "messages_unconfirmed": c.confirms.len(),
            "prefetch_count": c.prefetch_count,
            "global_prefetch_count": c.global_prefetch,
            "confirm": c.confirm,
            "transactional": c.tx.is_some(),
            "message_stats": message_stats(&c.stats),
        }));
    }
    out
}

pub fn consumers(b: &Broker, node: &str, who: &Identity, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut qs: Vec<&Queue> = b.queues.values().filter(|q| vhost.is_none_or(|v| v == q.vhost)).collect();
    qs.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    for q in qs {
        if !may_see_vhost(b, who, &q.vhost) {
            continue;
        }
        for c in &q.consumers {
            let Some(state) = b.connections.get(&c.conn) else { continue };
            if !who.is_monitor() && state.user != who.name {
                continue;
            }
            let meta = b.connection_meta(c.conn).cloned().unwrap_or_default();
            out.push(json!({
                "consumer_tag": c.tag.to_string(),
                "queue": {"name": q.name, "vhost": q.vhost},
                "channel_details": {
                    "name": channel_name(b, c.conn, c.channel),
                    "number": c.channel,
                    "node": node,
                    "connection_name": meta.name,
                    "peer_host": meta.peer_host,
                    "peer_port": meta.peer_port,
                    "user": state.user,
                },
                "ack_required": !c.no_ack,
                "exclusive": c.exclusive,
                "prefetch_count": c.prefetch_count,
                "arguments": field_table(&c.arguments),
                "active": true,
                "activity_status": "up",
                "priority": c.priority,
                // The acknowledgement timeout in force, in ms (RabbitMQ 3.12+ lists it; clients
                // such as rabbitmqadmin v2 require it).
                "consumer_timeout": b.ack_timeout_ms(q.id, c.timeout_ms),
            }));
        }
    }
    out
}

pub fn user(b: &Broker, u: &broker::auth::User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": broker::auth::HASHING_ALGORITHM,
        "tags": u.tags,
        "limits": limits_json(b.user_limits(&u.name).entries()),
    })
}

/// `{"max-connections": 5, ...}` from (name, value) pairs.
pub fn limits_json(entries: Vec<(&'static str, i64)>) -> Value {
    Value::Object(entries.into_iter().map(|(n, v)| (n.to_owned(), json!(v))).collect())
}

/// One user's limits as `GET /api/user-limits` lists them.
pub fn user_limits(user: &str, l: &broker::limits::UserLimits) -> Value {
    json!({"user": user, "value": limits_json(l.entries())})
}

pub fn permission(vhost: &str, user: &str, p: &broker::auth::Permissions) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure.source,
        "write": p.write.source,
        "read": p.read.source,
    })
}

pub fn all_permissions(b: &Broker) -> Vec<Value> {
    let mut out = Vec::new();
    for (vhost, m) in &b.auth().permissions {
        for (user, p) in m {
            out.push(permission(vhost, user, p));
        }
    }
    out
}

pub fn topic_permissions(b: &Broker) -> Vec<Value> {
    let mut out = Vec::new();
    for (vhost, m) in &b.auth().topic_permissions {
        for (user, list) in m {
            for t in list {
                out.push(json!({
                    "user": user,
                    "vhost": vhost,
                    "exchange": t.exchange,
                    "write": t.write.source,
                    "read": t.read.source,
                }));
            }
        }
    }
    out
}

/// Every queue `who` may see, sorted by vhost and name.
pub fn queues(b: &Broker, node: &str, who: &Identity, vhost: Option<&str>) -> Vec<Value> {
    let mut qs: Vec<&Queue> =
        b.queues.values().filter(|q| vhost.is_none_or(|v| v == q.vhost) && may_see_vhost(b, who, &q.vhost)).collect();
    qs.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    qs.into_iter().map(|q| queue(b, node, q)).collect()
}

pub fn exchanges(b: &Broker, who: &Identity, vhost: Option<&str>) -> Vec<Value> {
    let mut names: Vec<&String> = b.vhosts.keys().filter(|v| vhost.is_none_or(|x| x == v.as_str())).collect();
    names.sort();
    let mut out = Vec::new();
    for v in names {
        if !may_see_vhost(b, who, v) {
            continue;
        }
        let mut xs: Vec<&Exchange> = b.vhosts[v].exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(xs.into_iter().map(|x| exchange(b, v, x)));
    }
    out
}

pub fn policy(p: &broker::policy::Policy) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": field_table(&p.definition),
        "priority": p.priority,
    })
}

/// The declared `x-queue-type` (Warren serves every type as a classic queue; see
/// docs/conformance.md), "classic" without one.
fn queue_type(q: &broker::queue::Queue) -> &'static str {
    match q.arguments.get("x-queue-type").and_then(|v| v.as_str()) {
        Some("quorum") => "quorum",
        Some("stream") => "stream",
        _ => "classic",
    }
}

/// A global parameter as the API and the definitions show it: its value as JSON, not as text.
pub(crate) fn global_parameter(name: &str, value: &str) -> Value {
    json!({"name": name, "value": serde_json::from_str::<Value>(value).unwrap_or(Value::Null)})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves arguments survive JSON -> field table -> JSON, and properties keys follow
    /// RabbitMQ's shape ("~" for an empty key, escaped key, a digest after "~" with arguments).
    #[test]
    fn arguments_and_properties_keys() {
        let v = json!({"x-max-length": 10, "x-dead-letter-exchange": "dlx", "nested": {"a": [1, "b"]}, "f": true});
        let t = to_field_table(v.as_object().expect("object"));
        assert_eq!(field_table(&t), v);
        assert_eq!(properties_key("", &FieldTable::new()), "~");
        assert_eq!(properties_key("a.#", &FieldTable::new()), "a.%23");
        let with_args = properties_key("k", &t);
        assert!(with_args.starts_with("k~") && with_args.len() > 2);
        assert_eq!(with_args, properties_key("k", &t), "stable");
    }
}
