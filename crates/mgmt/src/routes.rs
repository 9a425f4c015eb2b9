//! The endpoints: one match on (method, path segments). Each takes the broker lock once through
//! `with`, either to snapshot (then renders) or to run an operation through the broker's API.

use amqp_codec::*;
use base64::Engine;
use broker::admin::AdminOp;
use broker::Message;
use hyper::Method as M;
use serde_json::{json, Map, Value};

use crate::render::{self, may_see_vhost};
use crate::{created, definitions, no_content, now_ms, ok_json, table, with, ApiError, ApiResult, Identity, Node, Req};

pub fn route(node: &dyn Node, r: &Req) -> ApiResult {
    let s: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    let who = &r.identity;
    match (&r.method, s.as_slice()) {
        (&M::GET, ["overview"]) => overview(node, who),
        (&M::GET, ["whoami"]) => ok_json(json!({"name": who.name, "tags": who.tags})),
        (&M::GET, ["cluster-name"]) => ok_json(json!({"name": cluster_name(node)})),
        (&M::PUT, ["cluster-name"]) => {
            who.require_admin()?;
            let name = match r.json()?.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => return Err(ApiError::bad_request("name must be a non-empty string")),
            };
            let value = Value::String(name).to_string();
            with(node, |b, _| b.set_global_parameter(broker::parameters::CLUSTER_NAME, &value))
                .map_err(ApiError::bad_request)?;
            no_content()
        }

        // ---- global parameters ----
        (&M::GET, ["global-parameters"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| b.global_parameters());
            ok_json(Value::Array(items.iter().map(|(n, v)| render::global_parameter(n, v)).collect()))
        }
        (&M::GET, ["global-parameters", name]) => {
            who.require_admin()?;
            match with(node, |b, _| b.global_parameter(name).map(str::to_owned)) {
                Some(v) => ok_json(render::global_parameter(name, &v)),
                None => Err(ApiError::not_found()),
            }
        }
        (&M::PUT, ["global-parameters", name]) => {
            who.require_admin()?;
            let value = match r.json()?.get("value") {
                Some(v) => v.to_string(),
                None => return Err(ApiError::bad_request("value is missing")),
            };
            let existed = with(node, |b, _| {
                let existed = b.global_parameter(name).is_some();
                b.set_global_parameter(name, &value).map(|()| existed)
            })
            .map_err(ApiError::bad_request)?;
            if existed {
                no_content()
            } else {
                created()
            }
        }
        (&M::DELETE, ["global-parameters", name]) => {
            who.require_admin()?;
            if with(node, |b, _| b.clear_global_parameter(name)) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }
        (&M::GET, ["nodes"]) => {
            who.require_monitor()?;
            list(r, vec![node_json(node)])
        }
        (&M::GET, ["nodes", name]) => {
            who.require_monitor()?;
            if *name != node.node_name() {
                return Err(ApiError::not_found());
            }
            ok_json(node_json(node))
        }
        // Features Warren does not have yet, listed empty so clients that walk them work.
        (&M::GET, ["extensions" | "feature-flags" | "deprecated-features" | "federation-links"]) => ok_json(json!([])),
        (&M::GET, ["parameters", ..] | ["auth", "attempts", ..] | ["shovels", ..]) => ok_json(json!([])),

        // ---- user limits ----
        (&M::GET, ["user-limits"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| {
                b.all_user_limits().into_iter().map(|(u, l)| render::user_limits(&u, &l)).collect::<Vec<Value>>()
            });
            ok_json(Value::Array(items))
        }
        (&M::GET, ["user-limits", u]) => {
            who.require_admin()?;
            let (exists, l) = with(node, |b, _| (b.auth().user(u).is_some(), b.user_limits(u)));
            if !exists {
                return Err(ApiError::not_found());
            }
            ok_json(Value::Array(if l.is_empty() { vec![] } else { vec![render::user_limits(u, &l)] }))
        }
        (&M::PUT, ["user-limits", u, name]) => {
            who.require_admin()?;
            let value = limit_value(&r.json()?, name)?;
            let (exists, mut l) = with(node, |b, _| (b.auth().user(u).is_some(), b.user_limits(u)));
            if !exists {
                return Err(ApiError::not_found());
            }
            if !l.set(name, Some(value)) {
                return Err(unknown_limit(name, value));
            }
            with(node, |b, _| b.set_user_limits(u, l)).map_err(ApiError::bad_request)?;
            no_content()
        }
        (&M::DELETE, ["user-limits", u, name]) => {
            who.require_admin()?;
            let (exists, mut l) = with(node, |b, _| (b.auth().user(u).is_some(), b.user_limits(u)));
            if !exists || !l.set(name, None) {
                return Err(ApiError::not_found());
            }
            with(node, |b, _| b.set_user_limits(u, l)).map_err(ApiError::bad_request)?;
            no_content()
        }

        // ---- vhost limits ----
        (&M::GET, ["vhost-limits"]) => {
            let items = with(node, |b, _| {
                b.all_vhost_limits()
                    .into_iter()
                    .filter(|(v, _)| may_see_vhost(b, who, v))
                    .map(|(v, l)| render::vhost_limits(&v, &l))
                    .collect::<Vec<Value>>()
            });
            ok_json(Value::Array(items))
        }
        (&M::GET, ["vhost-limits", v]) => {
            vhost_visible(node, who, v)?;
            let l = with(node, |b, _| b.vhost_limits(v));
            ok_json(Value::Array(if l.is_empty() { vec![] } else { vec![render::vhost_limits(v, &l)] }))
        }
        (&M::PUT, ["vhost-limits", v, name]) => {
            who.require_admin()?;
            vhost_visible(node, who, v)?;
            let value = limit_value(&r.json()?, name)?;
            let mut l = with(node, |b, _| b.vhost_limits(v));
            if !l.set(name, Some(value)) {
                return Err(unknown_limit(name, value));
            }
            with(node, |b, _| b.set_vhost_limits(v, l)).map_err(ApiError::bad_request)?;
            no_content()
        }
        (&M::DELETE, ["vhost-limits", v, name]) => {
            who.require_admin()?;
            vhost_visible(node, who, v)?;
            let mut l = with(node, |b, _| b.vhost_limits(v));
            if !l.set(name, None) {
                return Err(ApiError::not_found());
            }
            with(node, |b, _| b.set_vhost_limits(v, l)).map_err(ApiError::bad_request)?;
            no_content()
        }

        // ---- vhosts ----
        (&M::GET, ["vhosts"]) => {
            let items = with(node, |b, _| {
                let mut names: Vec<&String> = b.vhosts.keys().filter(|v| may_see_vhost(b, who, v)).collect();
                names.sort();
                names.into_iter().map(|v| render::vhost(b, v)).collect()
            });
            list(r, items)
        }
        (&M::GET, ["vhosts", v]) => {
            let found =
                with(node, |b, _| (b.vhosts.contains_key(*v) && may_see_vhost(b, who, v)).then(|| render::vhost(b, v)));
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, ["vhosts", v]) => {
            who.require_admin()?;
            let body = r.json()?;
            let meta = vhost_metadata(&body);
            // RabbitMQ's way to switch the firehose tracer (rabbitmqctl trace_on) over HTTP.
            let tracing = body.get("tracing").and_then(Value::as_bool);
            // A body with only `tracing` (as trace_on sends) leaves the description and tags be.
            let has_meta =
                ["description", "tags", "default_queue_type", "metadata"].iter().any(|k| body.contains_key(*k));
            let added = with(node, |b, _| {
                let added = b.create_vhost(v)?;
                if added || has_meta {
                    b.set_vhost_metadata(v, &meta.0, &meta.1, &meta.2)?;
                }
                if let Some(on) = tracing {
                    b.set_tracing(v, on).map_err(|e| e.reply_text())?;
                }
                if added && !who.internal {
                    // RabbitMQ compat: the user who creates a vhost over the API gets full
                    // permissions in it.
                    b.set_permissions(v, &who.name, ".*", ".*", ".*")?;
                }
                Ok::<_, String>(added)
            })
            .map_err(ApiError::bad_request)?;
            if added {
                created()
            } else {
                no_content()
            }
        }
        (&M::DELETE, ["vhosts", v]) => {
            who.require_admin()?;
            if with(node, |b, fx| b.delete_vhost(v, fx)) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }
        (&M::GET, ["vhosts", v, "permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| {
                b.auth()
                    .permissions
                    .get(*v)
                    .map(|m| m.iter().map(|(u, p)| render::permission(v, u, p)).collect())
                    .unwrap_or_default()
            });
            list(r, items)
        }
        (&M::GET, ["vhosts", v, "topic-permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::topic_permissions(b));
            list(r, items.into_iter().filter(|p| p["vhost"] == *v).collect())
        }
        (&M::GET, ["vhosts", v, "connections"]) => {
            let items = with(node, |b, _| render::connections(b, &node.node_name(), who));
            list(r, items.into_iter().filter(|c| c["vhost"] == *v).collect())
        }
        (&M::GET, ["vhosts", v, "channels"]) => {
            let items = with(node, |b, _| render::channels(b, &node.node_name(), who, None));
            list(r, items.into_iter().filter(|c| c["vhost"] == *v).collect())
        }

        // ---- users ----
        (&M::GET, ["users"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| b.auth().users.values().map(|u| render::user(b, u)).collect());
            list(r, items)
        }
        (&M::GET, ["users", "without-permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| {
                let a = b.auth();
                a.users
                    .values()
                    .filter(|u| !a.permissions.values().any(|m| m.contains_key(&u.name)))
                    .map(|u| render::user(b, u))
                    .collect()
            });
            list(r, items)
        }
        (&M::POST, ["users", "bulk-delete"]) => {
            who.require_admin()?;
            let body = r.json()?;
            let users: Vec<String> = body
                .get("users")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::bad_request("users must be a list"))?
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect();
            with(node, |b, fx| {
                for u in &users {
                    b.delete_user(u, fx);
                }
            });
            no_content()
        }
        (&M::GET, ["users", u]) => {
            who.require_admin()?;
            let found = with(node, |b, _| b.auth().user(u).map(|u| render::user(b, u)));
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, ["users", u]) => {
            who.require_admin()?;
            put_user(node, u, &r.json()?)
        }
        (&M::DELETE, ["users", u]) => {
            who.require_admin()?;
            if with(node, |b, fx| b.delete_user(u, fx)) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }
        (&M::GET, ["users", u, "permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::all_permissions(b));
            list(r, items.into_iter().filter(|p| p["user"] == *u).collect())
        }
        (&M::GET, ["users", u, "topic-permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::topic_permissions(b));
            list(r, items.into_iter().filter(|p| p["user"] == *u).collect())
        }

        // ---- permissions ----
        (&M::GET, ["permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::all_permissions(b));
            list(r, items)
        }
        (&M::GET, ["permissions", v, u]) => {
            who.require_admin()?;
            let found = with(node, |b, _| b.auth().permissions_of(v, u).map(|p| render::permission(v, u, p)));
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, ["permissions", v, u]) => {
            who.require_admin()?;
            let body = r.json()?;
            let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let (c, w, rd) = (field("configure"), field("write"), field("read"));
            let existed = with(node, |b, _| b.auth().permissions_of(v, u).is_some());
            with(node, |b, _| {
                if !b.vhosts.contains_key(*v) || b.auth().user(u).is_none() {
                    return Err(ApiError::not_found());
                }
                b.set_permissions(v, u, &c, &w, &rd).map_err(ApiError::bad_request)
            })?;
            if existed {
                no_content()
            } else {
                created()
            }
        }
        (&M::DELETE, ["permissions", v, u]) => {
            who.require_admin()?;
            if with(node, |b, _| b.clear_permissions(v, u)) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }
        (&M::GET, ["topic-permissions"]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::topic_permissions(b));
            list(r, items)
        }
        (&M::GET, ["topic-permissions", v, u]) => {
            who.require_admin()?;
            let items = with(node, |b, _| render::topic_permissions(b));
            let items: Vec<Value> = items.into_iter().filter(|p| p["vhost"] == *v && p["user"] == *u).collect();
            if items.is_empty() {
                return Err(ApiError::not_found());
            }
            ok_json(Value::Array(items))
        }
        (&M::PUT, ["topic-permissions", v, u]) => {
            who.require_admin()?;
            let body = r.json()?;
            let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let exchange = body
                .get("exchange")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("exchange is required"))?
                .to_owned();
            with(node, |b, _| {
                if !b.vhosts.contains_key(*v) || b.auth().user(u).is_none() {
                    return Err(ApiError::not_found());
                }
                b.set_topic_permissions(v, u, &exchange, &field("write"), &field("read")).map_err(ApiError::bad_request)
            })?;
            created()
        }
        (&M::DELETE, ["topic-permissions", v, u]) => {
            who.require_admin()?;
            let exchange = r.param("exchange").map(str::to_owned);
            if with(node, |b, _| b.clear_topic_permissions(v, u, exchange.as_deref())) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }

        // ---- exchanges ----
        (&M::GET, ["exchanges"]) => list(r, with(node, |b, _| render::exchanges(b, who, None))),
        (&M::GET, ["exchanges", v]) => {
            vhost_visible(node, who, v)?;
            list(r, with(node, |b, _| render::exchanges(b, who, Some(v))))
        }
        (&M::GET, ["exchanges", v, x]) => {
            vhost_visible(node, who, v)?;
            let found = with(node, |b, _| {
                b.vhosts.get(*v)?.exchanges.get(default_exchange(x)).map(|e| render::exchange(b, v, e))
            });
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, ["exchanges", v, x]) => {
            let body = r.json()?;
            let kind = body.get("type").and_then(Value::as_str).unwrap_or("direct").to_owned();
            let m = ExchangeDeclare {
                exchange: x.to_string(),
                kind,
                durable: bool_field(&body, "durable", true)?,
                auto_delete: bool_field(&body, "auto_delete", false)?,
                internal: bool_field(&body, "internal", false)?,
                arguments: render::arguments(&body)?,
                ..Default::default()
            };
            let existed = with(node, |b, _| b.vhosts.get(*v).is_some_and(|vh| vh.exchanges.contains_key(*x)));
            session(node, who, v, vec![AdminOp::Method(m.into())])?;
            if existed {
                no_content()
            } else {
                created()
            }
        }
        (&M::DELETE, ["exchanges", v, x]) => {
            let exists = with(node, |b, _| b.vhosts.get(*v).is_some_and(|vh| vh.exchanges.contains_key(*x)));
            if !exists {
                return Err(ApiError::not_found());
            }
            let m = ExchangeDelete { exchange: x.to_string(), if_unused: r.flag("if-unused"), ..Default::default() };
            session(node, who, v, vec![AdminOp::Method(m.into())])?;
            no_content()
        }
        (&M::POST, ["exchanges", v, x, "publish"]) => publish(node, r, v, x),
        (&M::GET, ["exchanges", v, x, "bindings", dir @ ("source" | "destination")]) => {
            vhost_visible(node, who, v)?;
            let items = with(node, |b, _| render::bindings(b, v));
            let key = if *dir == "source" { "source" } else { "destination" };
            let items = items
                .into_iter()
                .filter(|bd| bd[key] == *x && (*dir == "source" || bd["destination_type"] == "exchange"))
                .collect();
            list(r, items)
        }

        // ---- queues ----
        (&M::GET, ["queues"]) => list(r, with(node, |b, _| render::queues(b, &node.node_name(), who, None))),
        (&M::GET, ["queues", v]) => {
            vhost_visible(node, who, v)?;
            list(r, with(node, |b, _| render::queues(b, &node.node_name(), who, Some(v))))
        }
        (&M::GET, ["queues", v, q]) => {
            vhost_visible(node, who, v)?;
            let name = node.node_name();
            let found = with(node, |b, _| {
                let mut json = render::queue(b, &name, b.queue(v, q)?);
                // RabbitMQ's single-queue view also lists the queue's consumers, and the
                // per-channel flows it does not keep here as empty lists.
                let consumers: Vec<Value> = render::consumers(b, &name, who, Some(v))
                    .into_iter()
                    .filter(|c| c["queue"]["name"] == *q)
                    .collect();
                if let Some(o) = json.as_object_mut() {
                    o.insert("consumer_details".into(), Value::Array(consumers));
                    o.insert("deliveries".into(), json!([]));
                    o.insert("incoming".into(), json!([]));
                }
                Some(json)
            });
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, ["queues", v, q]) => {
            let body = r.json()?;
            let m = QueueDeclare {
                queue: q.to_string(),
                durable: bool_field(&body, "durable", true)?,
                auto_delete: bool_field(&body, "auto_delete", false)?,
                arguments: render::arguments(&body)?,
                ..Default::default()
            };
            let existed = with(node, |b, _| b.queue(v, q).is_some());
            session(node, who, v, vec![AdminOp::Method(m.into())])?;
            if existed {
                no_content()
            } else {
                created()
            }
        }
        (&M::DELETE, ["queues", v, q]) => {
            if !with(node, |b, _| b.queue(v, q).is_some()) {
                return Err(ApiError::not_found());
            }
            let m = QueueDelete {
                queue: q.to_string(),
                if_unused: r.flag("if-unused"),
                if_empty: r.flag("if-empty"),
                ..Default::default()
            };
            session(node, who, v, vec![AdminOp::Method(m.into())])?;
            no_content()
        }
        (&M::DELETE, ["queues", v, q, "contents"]) => {
            if !with(node, |b, _| b.queue(v, q).is_some()) {
                return Err(ApiError::not_found());
            }
            session(
                node,
                who,
                v,
                vec![AdminOp::Method(QueuePurge { queue: q.to_string(), ..Default::default() }.into())],
            )?;
            no_content()
        }
        (&M::POST, ["queues", v, q, "get"]) => get(node, r, v, q),
        (&M::GET, ["queues", v, q, "bindings"]) => {
            vhost_visible(node, who, v)?;
            let items = with(node, |b, _| render::bindings(b, v));
            list(
                r,
                items.into_iter().filter(|bd| bd["destination"] == *q && bd["destination_type"] == "queue").collect(),
            )
        }

        // ---- bindings ----
        (&M::GET, ["bindings"]) => {
            let items = with(node, |b, _| {
                let mut names: Vec<&String> = b.vhosts.keys().filter(|v| may_see_vhost(b, who, v)).collect();
                names.sort();
                names.into_iter().flat_map(|v| render::bindings(b, v)).collect()
            });
            list(r, items)
        }
        (&M::GET, ["bindings", v]) => {
            vhost_visible(node, who, v)?;
            list(r, with(node, |b, _| render::bindings(b, v)))
        }
        (&M::GET, ["bindings", v, "e", src, kind @ ("q" | "e"), dst]) => {
            vhost_visible(node, who, v)?;
            list(r, matching_bindings(node, v, src, kind, dst))
        }
        (&M::POST, ["bindings", v, "e", src, kind @ ("q" | "e"), dst]) => {
            let body = r.json()?;
            let rk = body.get("routing_key").and_then(Value::as_str).unwrap_or("").to_owned();
            let args = render::arguments(&body)?;
            let m: Method = if *kind == "q" {
                QueueBind {
                    queue: dst.to_string(),
                    exchange: src.to_string(),
                    routing_key: rk.clone(),
                    arguments: args.clone(),
                    ..Default::default()
                }
                .into()
            } else {
                ExchangeBind {
                    destination: dst.to_string(),
                    source: src.to_string(),
                    routing_key: rk.clone(),
                    arguments: args.clone(),
                    ..Default::default()
                }
                .into()
            };
            session(node, who, v, vec![AdminOp::Method(m)])?;
            let mut resp = created()?;
            let enc =
                |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            let location = format!("{}/{}", enc(&render::properties_key(&rk, &args)), "");
            let location = format!(
                "/api/bindings/{}/e/{}/{}/{}/{}",
                enc(v),
                enc(src),
                kind,
                enc(dst),
                location.trim_end_matches('/')
            );
            if let Ok(h) = hyper::header::HeaderValue::from_str(&location) {
                resp.headers_mut().insert(hyper::header::LOCATION, h);
            }
            Ok(resp)
        }
        (&M::GET, ["bindings", v, "e", src, kind @ ("q" | "e"), dst, props]) => {
            vhost_visible(node, who, v)?;
            let found =
                matching_bindings(node, v, src, kind, dst).into_iter().find(|bd| bd["properties_key"] == *props);
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::DELETE, ["bindings", v, "e", src, kind @ ("q" | "e"), dst, props]) => {
            let found =
                matching_bindings(node, v, src, kind, dst).into_iter().find(|bd| bd["properties_key"] == *props);
            let bd = found.ok_or_else(ApiError::not_found)?;
            let rk = bd["routing_key"].as_str().unwrap_or("").to_owned();
            let args = bd["arguments"].as_object().map(render::to_field_table).unwrap_or_default();
            let m: Method = if *kind == "q" {
                QueueUnbind {
                    queue: dst.to_string(),
                    exchange: src.to_string(),
                    routing_key: rk,
                    arguments: args,
                    ..Default::default()
                }
                .into()
            } else {
                ExchangeUnbind {
                    destination: dst.to_string(),
                    source: src.to_string(),
                    routing_key: rk,
                    arguments: args,
                    ..Default::default()
                }
                .into()
            };
            session(node, who, v, vec![AdminOp::Method(m)])?;
            no_content()
        }

        // ---- connections, channels, consumers ----
        (&M::GET, ["connections"]) => list(r, with(node, |b, _| render::connections(b, &node.node_name(), who))),
        (&M::GET, ["connections", "username", u]) => {
            if !who.is_monitor() && who.name != *u {
                return Err(ApiError::not_authorised("Not monitor user"));
            }
            let items = with(node, |b, _| render::connections(b, &node.node_name(), who));
            list(r, items.into_iter().filter(|c| c["user"] == *u).collect())
        }
        (&M::DELETE, ["connections", "username", u]) => {
            if !who.is_admin() && who.name != *u {
                return Err(ApiError::not_authorised("Not administrator user"));
            }
            let reason = r.reason_header.clone().unwrap_or_else(|| "Closed via management plugin".into());
            with(node, |b, fx| {
                let ids: Vec<u64> = b.connections.iter().filter(|(_, c)| c.user == *u).map(|(id, _)| *id).collect();
                for id in ids {
                    b.close_connection(id, &reason, fx);
                }
            });
            no_content()
        }
        (&M::GET, ["connections", name]) => {
            let items = with(node, |b, _| render::connections(b, &node.node_name(), who));
            ok_json(items.into_iter().find(|c| c["name"] == *name).ok_or_else(ApiError::not_found)?)
        }
        (&M::DELETE, ["connections", name]) => {
            let reason = r.reason_header.clone().unwrap_or_else(|| "Closed via management plugin".into());
            let closed = with(node, |b, fx| match render::find_connection(b, who, name) {
                Some(id) => b.close_connection(id, &reason, fx),
                None => false,
            });
            if closed {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }
        (&M::GET, ["connections", name, "channels"]) => {
            let items = with(node, |b, _| {
                let id = render::find_connection(b, who, name)?;
                Some(render::channels(b, &node.node_name(), who, Some(id)))
            });
            list(r, items.ok_or_else(ApiError::not_found)?)
        }
        (&M::GET, ["channels"]) => list(r, with(node, |b, _| render::channels(b, &node.node_name(), who, None))),
        (&M::GET, ["channels", name]) => {
            let items = with(node, |b, _| render::channels(b, &node.node_name(), who, None));
            ok_json(items.into_iter().find(|c| c["name"] == *name).ok_or_else(ApiError::not_found)?)
        }
        (&M::GET, ["consumers"]) => list(r, with(node, |b, _| render::consumers(b, &node.node_name(), who, None))),
        (&M::GET, ["consumers", v]) => {
            vhost_visible(node, who, v)?;
            list(r, with(node, |b, _| render::consumers(b, &node.node_name(), who, Some(v))))
        }

        // ---- definitions ----
        (&M::GET, ["definitions"]) => {
            who.require_admin()?;
            ok_json(with(node, |b, _| definitions::export(b, None)))
        }
        (&M::GET, ["definitions", v]) => {
            who.require_admin()?;
            vhost_visible(node, who, v)?;
            ok_json(with(node, |b, _| definitions::export(b, Some(v))))
        }
        (&M::POST, ["definitions"]) => {
            who.require_admin()?;
            definitions::import(node, &r.json()?, None)?;
            no_content()
        }
        (&M::POST, ["definitions", v]) => {
            who.require_admin()?;
            definitions::import(node, &r.json()?, Some(v))?;
            no_content()
        }

        // ---- health ----
        (&M::GET, ["health", "checks", "alarms" | "local-alarms"]) => {
            let alarms = node.alarms();
            if alarms.is_empty() {
                ok_json(json!({"status": "ok"}))
            } else {
                let alarms: Vec<Value> =
                    alarms.iter().map(|a| json!({"node": node.node_name(), "resource": a})).collect();
                Ok(crate::json_response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": alarms}),
                ))
            }
        }
        (
            &M::GET,
            ["health", "checks", "virtual-hosts"
            | "is-in-service"
            | "ready-to-serve-clients"
            | "node-is-quorum-critical"
            | "certificate-expiration", ..],
        ) => {
            if (s[2] == "is-in-service" || s[2] == "ready-to-serve-clients") && !node.app_running() {
                return Ok(crate::json_response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "failed", "reason": "the node is not running"}),
                ));
            }
            ok_json(json!({"status": "ok"}))
        }
        (&M::GET, ["health", "checks", "port-listener", port]) => {
            let port: u16 = port.parse().map_err(|_| ApiError::bad_request(format!("invalid port '{port}'")))?;
            let ports: Vec<u16> = node.listeners().iter().map(|(_, a)| a.port()).collect();
            if ports.contains(&port) {
                ok_json(json!({"status": "ok", "port": port}))
            } else {
                Ok(crate::json_response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}),
                ))
            }
        }
        (&M::GET, ["health", "checks", "protocol-listener", proto]) => {
            let want = match *proto {
                "amqp" | "amqp091" | "amqp0.9.1" | "amqp0-9-1" => "amqp",
                "amqps" | "amqp/ssl" | "amqp091/ssl" => "amqp/ssl",
                "http" | "management" => "http",
                other => other,
            };
            let protocols: Vec<String> = node.listeners().into_iter().map(|(p, _)| p).collect();
            if protocols.iter().any(|p| p == want) {
                ok_json(json!({"status": "ok", "protocol": proto}))
            } else {
                Ok(crate::json_response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "failed", "reason": "No active listener", "missing": proto, "protocols": protocols}),
                ))
            }
        }
        (&M::GET, ["aliveness-test", v]) => aliveness(node, who, v),
        // RabbitMQ's older, deprecated health check, still routed by it: this node (or the node
        // named, which must be this one) is up and has no alarm.
        (&M::GET, ["healthchecks", "node", rest @ ..]) if rest.len() <= 1 => {
            if rest.first().is_some_and(|n| !n.is_empty() && *n != node.node_name()) {
                return Err(ApiError::not_found());
            }
            let alarms = node.alarms();
            if alarms.is_empty() && node.app_running() {
                ok_json(json!({"status": "ok"}))
            } else {
                ok_json(
                    json!({"status": "failed", "reason": format!("resource alarm(s) in effect: {}", alarms.join(", "))}),
                )
            }
        }

        // ---- policies ----
        (&M::GET, [kind @ ("policies" | "operator-policies")]) => {
            policy_access(who, kind)?;
            let operator = *kind == "operator-policies";
            let items = with(node, |b, _| {
                b.policies(None, operator)
                    .into_iter()
                    .filter(|p| may_see_vhost(b, who, &p.vhost))
                    .map(render::policy)
                    .collect()
            });
            list(r, items)
        }
        (&M::GET, [kind @ ("policies" | "operator-policies"), v]) => {
            policy_access(who, kind)?;
            vhost_visible(node, who, v)?;
            let operator = *kind == "operator-policies";
            list(r, with(node, |b, _| b.policies(Some(v), operator).into_iter().map(render::policy).collect()))
        }
        (&M::GET, [kind @ ("policies" | "operator-policies"), v, name]) => {
            policy_access(who, kind)?;
            vhost_visible(node, who, v)?;
            let operator = *kind == "operator-policies";
            let found = with(node, |b, _| {
                b.policies(Some(v), operator).into_iter().find(|p| p.name == *name).map(render::policy)
            });
            ok_json(found.ok_or_else(ApiError::not_found)?)
        }
        (&M::PUT, [kind @ ("policies" | "operator-policies"), v, name]) => {
            policy_access(who, kind)?;
            vhost_visible(node, who, v)?;
            let operator = *kind == "operator-policies";
            let body = r.json()?;
            let existed = with(node, |b, _| b.policies(Some(v), operator).iter().any(|p| p.name == *name));
            put_policy(node, v, name, &body, operator)?;
            if existed {
                no_content()
            } else {
                created()
            }
        }
        (&M::DELETE, [kind @ ("policies" | "operator-policies"), v, name]) => {
            policy_access(who, kind)?;
            vhost_visible(node, who, v)?;
            let operator = *kind == "operator-policies";
            if with(node, |b, fx| b.clear_policy(v, name, operator, fx)) {
                no_content()
            } else {
                Err(ApiError::not_found())
            }
        }

        // ---- node control (warrenctl) ----
        (&M::POST, ["warren", "authenticate"]) => {
            // warrenctl authenticate_user: the password check of an AMQP login, nothing else.
            who.require_admin()?;
            let body = r.json()?;
            let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let (user, password) = (field("username"), field("password"));
            match with(node, |b, _| b.authenticate(&user, &password, true, "").map(|u| u.tags.clone())) {
                Ok(tags) => ok_json(json!({"name": user, "tags": tags})),
                Err(_) => Err(ApiError::bad_request(format!("user '{user}' - invalid credentials"))),
            }
        }
        (&M::PUT, ["warren", "node", "limits", which]) => {
            // warrenctl set_vm_memory_high_watermark / set_disk_free_limit.
            who.require_admin()?;
            let body = r.json()?;
            node.set_limit(which, &Value::Object(body)).map_err(ApiError::bad_request)?;
            no_content()
        }
        (&M::POST, ["warren", "node", action]) => {
            who.require_admin()?;
            node_control(node, action)
        }

        (
            _,
            ["overview" | "whoami" | "vhosts" | "users" | "permissions" | "exchanges" | "queues" | "bindings"
            | "connections" | "channels" | "consumers" | "definitions" | "policies", ..],
        ) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found()),
    }
}

/// The integer `value` of a limit's PUT body.
fn limit_value(body: &Map<String, Value>, name: &str) -> Result<i64, ApiError> {
    match body.get("value") {
        Some(x) => x
            .as_i64()
            .ok_or_else(|| ApiError::bad_request(format!("Validation failed\n\n{name} must be an integer, got {x}"))),
        None => Err(ApiError::bad_request("Validation failed\n\nvalue is required")),
    }
}

fn unknown_limit(name: &str, value: i64) -> ApiError {
    ApiError::bad_request(format!("Validation failed\n\nUnrecognised terms [{{<<\"{name}\">>,{value}}}] in limits"))
}

/// (description, tags, default queue type) from a vhost body, top level or under `metadata`
/// (RabbitMQ accepts both; tags as a list or a comma-separated string).
pub fn vhost_metadata(body: &Map<String, Value>) -> (String, Vec<String>, String) {
    let meta = body.get("metadata").and_then(Value::as_object);
    let field = |k: &str| body.get(k).or_else(|| meta.and_then(|m| m.get(k)));
    let description = field("description").and_then(Value::as_str).unwrap_or("").to_owned();
    let tags = tags_of(field("tags"));
    let dqt = field("default_queue_type").and_then(Value::as_str).unwrap_or("").to_owned();
    (description, tags, dqt)
}

/// Policies need the policymaker tag, operator policies administrator (as RabbitMQ).
fn policy_access(who: &Identity, kind: &str) -> Result<(), ApiError> {
    if kind == "operator-policies" {
        who.require_admin()
    } else {
        who.require_policymaker()
    }
}

/// Sets a policy from a RabbitMQ-shaped body: `pattern`, `definition`, `priority`, `apply-to`.
pub fn put_policy(
    node: &dyn Node,
    v: &str,
    name: &str,
    body: &Map<String, Value>,
    operator: bool,
) -> Result<(), ApiError> {
    let pattern = body
        .get("pattern")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("pattern is required"))?
        .to_owned();
    let definition = match body.get("definition") {
        Some(Value::Object(o)) => render::to_field_table(o),
        _ => return Err(ApiError::bad_request("definition must be an object")),
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| ApiError::bad_request("priority must be an integer"))?,
        Some(Value::String(s)) => s.parse().map_err(|_| ApiError::bad_request("priority must be an integer"))?,
        Some(_) => return Err(ApiError::bad_request("priority must be an integer")),
    };
    let apply_to = body.get("apply-to").and_then(Value::as_str).unwrap_or("all").to_owned();
    with(node, |b, fx| b.set_policy(v, name, &pattern, &apply_to, priority, definition, operator, fx))
        .map_err(ApiError::bad_request)
}

/// The API names the default exchange `amq.default` in paths.
fn default_exchange(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

fn list(r: &Req, items: Vec<Value>) -> ApiResult {
    ok_json(table::list(r, items)?)
}

fn bool_field(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a boolean"))),
    }
}

/// 404 when the vhost does not exist, 401 when `who` may not see it.
fn vhost_visible(node: &dyn Node, who: &Identity, v: &str) -> Result<(), ApiError> {
    let (exists, visible) = with(node, |b, _| (b.vhosts.contains_key(v), may_see_vhost(b, who, v)));
    if !exists {
        return Err(ApiError::not_found());
    }
    if !visible {
        return Err(ApiError::not_authorised("User not authorised to access virtual host"));
    }
    Ok(())
}

/// Runs AMQP-shaped operations in `vhost` as `who`.
pub fn session(
    node: &dyn Node,
    who: &Identity,
    vhost: &str,
    ops: Vec<AdminOp>,
) -> Result<broker::admin::AdminReplies, ApiError> {
    with(node, |b, fx| {
        if !b.vhosts.contains_key(vhost) {
            return Err(ApiError::not_found());
        }
        b.admin_session(vhost, who.session_user(), ops, now_ms(), fx).map_err(ApiError::amqp)
    })
}

fn matching_bindings(node: &dyn Node, v: &str, src: &str, kind: &str, dst: &str) -> Vec<Value> {
    let dtype = if kind == "q" { "queue" } else { "exchange" };
    let items = with(node, |b, _| render::bindings(b, v));
    items
        .into_iter()
        .filter(|bd| bd["source"] == src && bd["destination"] == dst && bd["destination_type"] == dtype)
        .collect()
}

fn put_user(node: &dyn Node, name: &str, body: &Map<String, Value>) -> ApiResult {
    let tags = tags_of(body.get("tags"));
    let hash = match (body.get("password").and_then(Value::as_str), body.get("password_hash").and_then(Value::as_str)) {
        (Some(p), _) => broker::auth::hash_password(p, rand::random()),
        (None, Some(h)) => {
            if let Some(alg) = body.get("hashing_algorithm").and_then(Value::as_str) {
                if alg != broker::auth::HASHING_ALGORITHM {
                    return Err(ApiError::bad_request(format!("unsupported hashing algorithm '{alg}'")));
                }
            }
            h.to_owned()
        }
        (None, None) => {
            // RabbitMQ compat: an existing user keeps its password when only tags change.
            match with(node, |b, _| b.auth().user(name).map(|u| u.password_hash.clone())) {
                Some(h) => h,
                None => return Err(ApiError::bad_request("Must specify password or password_hash")),
            }
        }
    };
    let existed = with(node, |b, _| b.auth().user(name).is_some());
    with(node, |b, _| b.put_user(name, &hash, &tags)).map_err(ApiError::bad_request)?;
    if existed {
        no_content()
    } else {
        created()
    }
}

/// `tags` as RabbitMQ accepts them: a comma-separated string or a list.
pub fn tags_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn overview(node: &dyn Node, who: &Identity) -> ApiResult {
    let (mut conns, mut chans, mut xs, mut qs, mut consumers, mut ready, mut unacked) = (0, 0, 0, 0, 0, 0u64, 0u64);
    let mut stats = Value::Null;
    with(node, |b, _| {
        stats = crate::render::message_stats(b.totals());
        for (id, c) in &b.connections {
            if *id < broker::admin::INTERNAL_CONNECTION_BASE && (who.is_monitor() || c.user == who.name) {
                conns += 1;
                chans += b.channels.keys().filter(|(cid, _)| cid == id).count();
            }
        }
        for (name, v) in &b.vhosts {
            if may_see_vhost(b, who, name) {
                xs += v.exchanges.len();
            }
        }
        for q in b.queues.values() {
            if may_see_vhost(b, who, &q.vhost) {
                qs += 1;
                consumers += q.consumers.len();
                ready += q.ready_len() as u64;
                unacked += q.unacked_count as u64;
            }
        }
    });
    let listeners: Vec<Value> = node
        .listeners()
        .iter()
        .map(|(p, a)| {
            json!({"node": node.node_name(), "protocol": p.as_str(), "ip_address": a.ip().to_string(), "port": a.port()})
        })
        .collect();
    ok_json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "4.0.0",
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "erlang_version": "none (Rust)",
        "cluster_name": cluster_name(node),
        "node": node.node_name(),
        "rates_mode": "basic",
        "object_totals": {"connections": conns, "channels": chans, "exchanges": xs, "queues": qs, "consumers": consumers},
        "queue_totals": {"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
        "message_stats": stats,
        "listeners": listeners,
        // RabbitMQ lists its web listeners here (clients read contexts[0].node).
        "contexts": node
            .listeners()
            .iter()
            .filter(|(p, _)| p == "http")
            .map(|(_, a)| json!({"node": node.node_name(), "description": "RabbitMQ Management", "path": "/", "port": a.port().to_string()}))
            .collect::<Vec<Value>>(),
        "exchange_types": [
            {"name": "direct"}, {"name": "fanout"}, {"name": "topic"}, {"name": "headers"},
            {"name": "x-delayed-message"}, {"name": "x-consistent-hash"},
            {"name": "x-local-random"}, {"name": "x-random"}
        ],
    }))
}

fn node_json(node: &dyn Node) -> Value {
    let uptime = now_ms().saturating_sub(node.started_at_ms());
    let mut v = json!({
        "name": node.node_name(),
        "type": "disc",
        "running": node.app_running(),
        "uptime": uptime,
        "mem_alarm": node.alarms().iter().any(|a| a == "memory"),
        "disk_free_alarm": node.alarms().iter().any(|a| a == "disk"),
        "os_pid": std::process::id().to_string(),
        "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "being_drained": false,
        "partitions": [],
        "rates_mode": "basic",
    });
    if let Some(o) = v.as_object_mut() {
        o.extend(node.resources());
    }
    v
}

fn properties_json(props: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put("content_type", props.content_type.clone().map(Value::from));
    put("content_encoding", props.content_encoding.clone().map(Value::from));
    put("headers", props.headers.as_ref().map(render::field_table));
    put("delivery_mode", props.delivery_mode.map(Value::from));
    put("priority", props.priority.map(Value::from));
    put("correlation_id", props.correlation_id.clone().map(Value::from));
    put("reply_to", props.reply_to.clone().map(Value::from));
    put("expiration", props.expiration.clone().map(Value::from));
    put("message_id", props.message_id.clone().map(Value::from));
    put("timestamp", props.timestamp.map(Value::from));
    put("type", props.kind.clone().map(Value::from));
    put("user_id", props.user_id.clone().map(Value::from));
    put("app_id", props.app_id.clone().map(Value::from));
    put("cluster_id", props.cluster_id.clone().map(Value::from));
    Value::Object(m)
}

fn properties_from(v: Option<&Value>) -> Result<BasicProperties, ApiError> {
    let Some(v) = v else { return Ok(BasicProperties::default()) };
    let o = v.as_object().ok_or_else(|| ApiError::bad_request("properties must be an object"))?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| o.get(k).and_then(Value::as_u64);
    Ok(BasicProperties {
        content_type: s("content_type"),
        content_encoding: s("content_encoding"),
        headers: o.get("headers").and_then(Value::as_object).map(render::to_field_table),
        delivery_mode: n("delivery_mode").map(|d| d as u8),
        priority: n("priority").map(|p| p as u8),
        correlation_id: s("correlation_id"),
        reply_to: s("reply_to"),
        expiration: s("expiration"),
        message_id: s("message_id"),
        timestamp: n("timestamp"),
        kind: s("type"),
        user_id: s("user_id"),
        app_id: s("app_id"),
        cluster_id: s("cluster_id"),
    })
}

fn publish(node: &dyn Node, r: &Req, v: &str, x: &str) -> ApiResult {
    let body = r.json()?;
    let rk = body
        .get("routing_key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("routing_key is required"))?;
    let payload =
        body.get("payload").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("payload is required"))?;
    let bytes = match body.get("payload_encoding").and_then(Value::as_str).unwrap_or("string") {
        "string" => bytes::Bytes::copy_from_slice(payload.as_bytes()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map(bytes::Bytes::from)
            .map_err(|_| ApiError::bad_request("payload is not valid base64"))?,
        other => return Err(ApiError::bad_request(format!("unknown payload_encoding '{other}'"))),
    };
    let props = properties_from(body.get("properties"))?;
    let exchange = default_exchange(x);
    if !with(node, |b, _| b.vhosts.get(v).is_some_and(|vh| vh.exchanges.contains_key(exchange))) {
        return Err(ApiError::not_found());
    }
    let message = Message::with_properties(exchange, rk, &props, bytes);
    let replies = session(node, &r.identity, v, vec![AdminOp::Publish(message)])?;
    ok_json(json!({"routed": !replies.returned()}))
}

fn get(node: &dyn Node, r: &Req, v: &str, q: &str) -> ApiResult {
    let body = r.json()?;
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(1).min(10_000);
    let ackmode = body.get("ackmode").and_then(Value::as_str).unwrap_or("ack_requeue_true");
    let requeue = match ackmode {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let encoding = body.get("encoding").and_then(Value::as_str).unwrap_or("auto");
    let truncate = body.get("truncate").and_then(Value::as_u64).map(|t| t as usize);
    if !with(node, |b, _| b.queue(v, q).is_some()) {
        return Err(ApiError::not_found());
    }
    // Requeued messages go back when the session's channel closes; others are taken no-ack.
    let ops = (0..count)
        .map(|_| AdminOp::Method(BasicGet { queue: q.to_owned(), no_ack: !requeue, ..Default::default() }.into()))
        .collect();
    let replies = session(node, &r.identity, v, ops)?;
    let out: Vec<Value> = replies
        .got()
        .into_iter()
        .map(|(m, redelivered, message_count)| {
            let props = BasicProperties::decode(&m.properties).unwrap_or_default();
            let mut body = &m.body[..];
            if let Some(t) = truncate {
                body = &body[..body.len().min(t)];
            }
            let (payload, enc) = match (encoding, std::str::from_utf8(body)) {
                ("auto", Ok(s)) => (s.to_owned(), "string"),
                _ => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
            };
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": redelivered,
                "exchange": m.exchange,
                "routing_key": m.routing_key,
                "message_count": message_count,
                "properties": properties_json(&props),
                "payload": payload,
                "payload_encoding": enc,
            })
        })
        .collect();
    ok_json(Value::Array(out))
}

fn aliveness(node: &dyn Node, who: &Identity, v: &str) -> ApiResult {
    vhost_visible(node, who, v)?;
    let q = "aliveness-test";
    let declare = QueueDeclare { queue: q.into(), durable: false, ..Default::default() };
    let m = Message::with_properties("", q, &BasicProperties::default(), bytes::Bytes::from_static(b"test_message"));
    let get = BasicGet { queue: q.into(), no_ack: true, ..Default::default() };
    let replies =
        session(node, who, v, vec![AdminOp::Method(declare.into()), AdminOp::Publish(m), AdminOp::Method(get.into())])?;
    if replies.got().iter().any(|(m, _, _)| &m.body[..] == b"test_message") {
        ok_json(json!({"status": "ok"}))
    } else {
        Ok(crate::json_response(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "failed", "reason": "aliveness test message not received"}),
        ))
    }
}

fn node_control(node: &dyn Node, action: &str) -> ApiResult {
    match action {
        "stop" => {
            node.stop();
            no_content()
        }
        "stop_app" => {
            node.set_app_running(false);
            no_content()
        }
        "start_app" => {
            node.set_app_running(true);
            no_content()
        }
        "reset" => {
            if node.app_running() {
                return Err(ApiError {
                    status: hyper::StatusCode::CONFLICT,
                    error: "bad_request",
                    reason: "the node is still running; stop it with warrenctl stop_app first".into(),
                });
            }
            let (user, pass) = node.default_user();
            with(node, |b, fx| {
                b.reset(fx);
                let hash = broker::auth::hash_password(&pass, rand::random());
                b.put_user(&user, &hash, &["administrator".to_owned()])
                    .and_then(|()| b.set_permissions("/", &user, ".*", ".*", ".*"))
            })
            .map_err(ApiError::bad_request)?;
            no_content()
        }
        _ => Err(ApiError::not_found()),
    }
}

fn cluster_name(node: &dyn Node) -> String {
    with(node, |b, _| b.cluster_name())
}
