//! Definitions export and import in RabbitMQ's format (`/api/definitions`): users (with their
//! password hashes), vhosts, permissions, topic permissions, exchanges, queues and bindings.
//! A file exported from RabbitMQ imports, and an export of Warren imports into RabbitMQ.

use amqp_codec::*;
use broker::admin::AdminOp;
use broker::Broker;
use serde_json::{json, Map, Value};

use crate::render;
use crate::routes::{session, tags_of};
use crate::{with, ApiError, Identity, Node};

/// The definitions of the node, or of one vhost (without users, vhosts and permissions, as
/// RabbitMQ's per-vhost export).
pub fn export(b: &Broker, vhost: Option<&str>) -> Value {
    let mut vhosts: Vec<&String> = b.vhosts.keys().filter(|v| vhost.is_none_or(|x| x == v.as_str())).collect();
    vhosts.sort();
    let mut exchanges = Vec::new();
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for v in &vhosts {
        let vh = &b.vhosts[*v];
        let mut xs: Vec<_> =
            vh.exchanges.values().filter(|x| !x.name.is_empty() && !x.name.starts_with("amq.")).collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            exchanges.push(json!({
                "name": x.name, "vhost": v, "type": x.kind.as_str(), "durable": x.durable,
                "auto_delete": x.auto_delete, "internal": x.internal, "arguments": render::field_table(&x.arguments),
            }));
        }
        let mut qs: Vec<_> =
            vh.queues.values().filter_map(|id| b.queues.get(id)).filter(|q| q.exclusive_owner.is_none()).collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            queues.push(json!({
                "name": q.name, "vhost": v, "durable": q.durable, "auto_delete": q.auto_delete,
                "arguments": render::field_table(&q.arguments),
            }));
        }
        for mut bd in render::bindings(b, v) {
            if bd["source"] == "" {
                continue;
            }
            let exclusive_dest = bd["destination_type"] == "queue"
                && b.queue(v, bd["destination"].as_str().unwrap_or("")).is_some_and(|q| q.exclusive_owner.is_some());
            if exclusive_dest {
                continue;
            }
            if let Some(o) = bd.as_object_mut() {
                o.remove("properties_key");
            }
            bindings.push(bd);
        }
    }
    let mut out = json!({
        "rabbit_version": "4.0.0",
        "rabbitmq_version": "4.0.0",
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "parameters": b
            .policies(vhost, true)
            .into_iter()
            .map(|p| json!({
                "vhost": p.vhost,
                "component": "operator_policy",
                "name": p.name,
                "value": {
                    "pattern": p.pattern,
                    "apply-to": p.apply_to.as_str(),
                    "priority": p.priority,
                    "definition": render::field_table(&p.definition),
                },
            }))
            // Vhost limits are the runtime parameter `limits` of component `vhost-limits`.
            .chain(b.all_vhost_limits().into_iter().filter(|(v, _)| vhost.is_none_or(|x| x == v)).map(|(v, l)| {
                let limits = render::vhost_limits(&v, &l);
                json!({"vhost": v, "component": "vhost-limits", "name": "limits", "value": limits["value"]})
            }))
            .collect::<Vec<_>>(),
        "policies": b.policies(vhost, false).into_iter().map(render::policy).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    if vhost.is_none() {
        let o = out.as_object_mut().expect("built as an object");
        o.insert("users".into(), Value::Array(b.auth().users.values().map(|u| render::user(b, u)).collect()));
        o.insert(
            "vhosts".into(),
            Value::Array(
                vhosts
                    .iter()
                    .map(|v| {
                        let r = render::vhost(b, v);
                        json!({
                            "name": v,
                            "limits": [],
                            "description": r["description"],
                            "tags": r["tags"],
                            "default_queue_type": r["default_queue_type"],
                            "metadata": r["metadata"],
                        })
                    })
                    .collect(),
            ),
        );
        o.insert("permissions".into(), Value::Array(render::all_permissions(b)));
        o.insert("topic_permissions".into(), Value::Array(render::topic_permissions(b)));
        let params: Vec<Value> =
            b.global_parameters().iter().map(|(name, value)| render::global_parameter(name, value)).collect();
        o.insert("global_parameters".into(), Value::Array(params));
    }
    out
}

fn list<'a>(defs: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ApiError> {
    match defs.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a list"))),
    }
}

fn text<'a>(o: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("missing or invalid '{key}' in {o}")))
}

fn flag(o: &Value, key: &str, default: bool) -> bool {
    o.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn args(o: &Value) -> FieldTable {
    o.get("arguments").and_then(Value::as_object).map(render::to_field_table).unwrap_or_default()
}

/// Imports `defs`; into `only_vhost` when given (entities' own vhost fields are then ignored).
/// Everything is validated as it is applied; the first error stops the import.
pub fn import(node: &dyn Node, defs: &Map<String, Value>, only_vhost: Option<&str>) -> Result<(), ApiError> {
    let admin = Identity { name: "definitions".into(), tags: vec!["administrator".into()], internal: true };
    let vhost_of = |o: &Value| -> Result<String, ApiError> {
        match only_vhost {
            Some(v) => Ok(v.to_owned()),
            None => Ok(text(o, "vhost")?.to_owned()),
        }
    };
    if only_vhost.is_none() {
        for p in list(defs, "global_parameters")? {
            let name = text(p, "name")?.to_owned();
            let value = p.get("value").unwrap_or(&Value::Null).to_string();
            with(node, |b, _| b.set_global_parameter(&name, &value)).map_err(ApiError::bad_request)?;
        }
        for v in list(defs, "vhosts")? {
            let name = text(v, "name")?.to_owned();
            let (description, tags, dqt) = crate::routes::vhost_metadata(v.as_object().unwrap_or(&Map::new()));
            with(node, |b, _| {
                b.create_vhost(&name)?;
                b.set_vhost_metadata(&name, &description, &tags, &dqt)
            })
            .map_err(ApiError::bad_request)?;
        }
        for u in list(defs, "users")? {
            let name = text(u, "name")?.to_owned();
            let hash = match (u.get("password_hash").and_then(Value::as_str), u.get("password").and_then(Value::as_str))
            {
                (Some(h), _) => h.to_owned(),
                (None, Some(p)) => broker::auth::hash_password(p, rand::random()),
                (None, None) => String::new(),
            };
            if let Some(alg) = u.get("hashing_algorithm").and_then(Value::as_str) {
                if alg != broker::auth::HASHING_ALGORITHM && !hash.is_empty() {
                    return Err(ApiError::bad_request(format!("user '{name}': unsupported hashing algorithm '{alg}'")));
                }
            }
            let tags = tags_of(u.get("tags"));
            with(node, |b, _| b.put_user(&name, &hash, &tags)).map_err(ApiError::bad_request)?;
            // RabbitMQ exports a user's limits with the user (an empty list or map when none).
            if let Some(Value::Object(m)) = u.get("limits") {
                let mut limits = broker::limits::UserLimits::default();
                for (k, v) in m {
                    let n = v.as_i64().ok_or_else(|| ApiError::bad_request(format!("limit {k} must be an integer")))?;
                    if !limits.set(k, Some(n)) {
                        return Err(ApiError::bad_request(format!("unknown user limit '{k}'")));
                    }
                }
                with(node, |b, _| b.set_user_limits(&name, limits)).map_err(ApiError::bad_request)?;
            }
        }
        for p in list(defs, "permissions")? {
            let (v, u) = (text(p, "vhost")?.to_owned(), text(p, "user")?.to_owned());
            let (c, w, r) =
                (text(p, "configure")?.to_owned(), text(p, "write")?.to_owned(), text(p, "read")?.to_owned());
            with(node, |b, _| b.set_permissions(&v, &u, &c, &w, &r)).map_err(ApiError::bad_request)?;
        }
        for p in list(defs, "topic_permissions")? {
            let (v, u, x) =
                (text(p, "vhost")?.to_owned(), text(p, "user")?.to_owned(), text(p, "exchange")?.to_owned());
            let (w, r) = (text(p, "write")?.to_owned(), text(p, "read")?.to_owned());
            with(node, |b, _| b.set_topic_permissions(&v, &u, &x, &w, &r)).map_err(ApiError::bad_request)?;
        }
    }
    for p in list(defs, "policies")? {
        let v = vhost_of(p)?;
        let name = text(p, "name")?.to_owned();
        let body = p.as_object().cloned().unwrap_or_default();
        crate::routes::put_policy(node, &v, &name, &body, false)?;
    }
    // RabbitMQ exports operator policies as runtime parameters of component `operator_policy`;
    // 3.10 writes their definition as a list of [key, value] pairs.
    for p in list(defs, "parameters")? {
        if p.get("component").and_then(Value::as_str) == Some("vhost-limits") {
            let v = vhost_of(p)?;
            let mut limits = broker::limits::VhostLimits::default();
            for (name, value) in p.get("value").and_then(Value::as_object).into_iter().flatten() {
                let n =
                    value.as_i64().ok_or_else(|| ApiError::bad_request(format!("limit {name} must be an integer")))?;
                if !limits.set(name, Some(n)) {
                    return Err(ApiError::bad_request(format!("unknown vhost limit '{name}'")));
                }
            }
            with(node, |b, _| b.set_vhost_limits(&v, limits)).map_err(ApiError::bad_request)?;
            continue;
        }
        if p.get("component").and_then(Value::as_str) != Some("operator_policy") {
            continue;
        }
        let v = vhost_of(p)?;
        let name = text(p, "name")?.to_owned();
        let mut body = p.get("value").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(Value::Array(pairs)) = body.get("definition") {
            let mut def = Map::new();
            for pair in pairs {
                if let Some([Value::String(k), val]) = pair.as_array().map(Vec::as_slice) {
                    def.insert(k.clone(), val.clone());
                }
            }
            body.insert("definition".into(), Value::Object(def));
        }
        crate::routes::put_policy(node, &v, &name, &body, true)?;
    }
    for x in list(defs, "exchanges")? {
        let v = vhost_of(x)?;
        let m = ExchangeDeclare {
            exchange: text(x, "name")?.to_owned(),
            kind: text(x, "type")?.to_owned(),
            durable: flag(x, "durable", true),
            auto_delete: flag(x, "auto_delete", false),
            internal: flag(x, "internal", false),
            arguments: args(x),
            ..Default::default()
        };
        session(node, &admin, &v, vec![AdminOp::Method(m.into())])?;
    }
    for q in list(defs, "queues")? {
        let v = vhost_of(q)?;
        let m = QueueDeclare {
            queue: text(q, "name")?.to_owned(),
            durable: flag(q, "durable", true),
            auto_delete: flag(q, "auto_delete", false),
            arguments: args(q),
            ..Default::default()
        };
        session(node, &admin, &v, vec![AdminOp::Method(m.into())])?;
    }
    for bd in list(defs, "bindings")? {
        let v = vhost_of(bd)?;
        let (src, dst, rk) =
            (text(bd, "source")?.to_owned(), text(bd, "destination")?.to_owned(), text(bd, "routing_key")?.to_owned());
        let m: Method = match text(bd, "destination_type")? {
            "queue" => {
                QueueBind { queue: dst, exchange: src, routing_key: rk, arguments: args(bd), ..Default::default() }
                    .into()
            }
            "exchange" => ExchangeBind {
                destination: dst,
                source: src,
                routing_key: rk,
                arguments: args(bd),
                ..Default::default()
            }
            .into(),
            other => return Err(ApiError::bad_request(format!("unknown destination_type '{other}'"))),
        };
        session(node, &admin, &v, vec![AdminOp::Method(m)])?;
    }
    Ok(())
}
