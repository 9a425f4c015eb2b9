//! Administration that is not an AMQP method: vhost deletion, closing connections, reset, and
//! running AMQP operations on behalf of the HTTP API and warrenctl.
//!
//! API operations (declare, delete, bind, publish, get, purge) run as AMQP methods on a
//! short-lived internal connection opened in the target vhost as the requesting user, so they
//! go through exactly the checks, permission rules, reply texts and journaling of a client's.
//! Nothing here does I/O.

use std::sync::Arc;

use amqp_codec::Method;

use crate::{AmqpError, Broker, ConnectionId, Effects, Message, Outbound, PublishFlags, Result, WriteCredit};

/// Connection ids of internal API connections start here (client ids count up from 1).
pub const INTERNAL_CONNECTION_BASE: ConnectionId = 1 << 62;

/// What an internal connection's operations sent back.
#[derive(Debug, Default)]
pub struct AdminReplies {
    pub out: Vec<Outbound>,
}

impl AdminReplies {
    /// The messages basic.get returned, with the queue's remaining count.
    pub fn got(&self) -> Vec<(Arc<Message>, bool, u32)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outbound::GetOk { message, redelivered, message_count, .. } => {
                    Some((message.clone(), *redelivered, *message_count))
                }
                _ => None,
            })
            .collect()
    }
    /// True when a mandatory publish came back unroutable.
    pub fn returned(&self) -> bool {
        self.out.iter().any(|o| matches!(o, Outbound::Return { .. }))
    }
    /// The replies' methods, in order.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.out.iter().filter_map(|o| match o {
            Outbound::Method { method, .. } => Some(method),
            _ => None,
        })
    }
}

/// One step of an internal session.
#[derive(Debug)]
pub enum AdminOp {
    Method(Method),
    /// basic.publish with mandatory set (the reply tells whether it was routed).
    Publish(Message),
}

impl Broker {
    /// Runs `ops` in order on a fresh internal connection in `vhost` as `user` (empty: a trusted
    /// caller, unchecked; user names are never empty), stopping at the
    /// first error, then closes the connection (unacked messages are requeued, as when a
    /// client's channel closes). Replies to the internal connection are returned; effects for
    /// others (deliveries to consumers, cancellations) go to `fx`.
    pub fn admin_session(
        &mut self,
        vhost: &str,
        user: &str,
        ops: Vec<AdminOp>,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<AdminReplies> {
        self.auth.next_internal_connection += 1;
        let conn = INTERNAL_CONNECTION_BASE + self.auth.next_internal_connection;
        if self.auth.initialized && !user.is_empty() {
            self.check_vhost_access(user, vhost)?;
        } else if !self.vhosts.contains_key(vhost) {
            return Err(AmqpError::not_allowed(format!("vhost {vhost} not found")));
        }
        self.connection_open(conn, vhost, user, WriteCredit::new(i64::MAX / 2))?;
        self.channel_open(conn, 1);
        let mut r = Ok(());
        for op in ops {
            r = match op {
                AdminOp::Method(m) => self.handle(conn, 1, m, now_ms, fx),
                AdminOp::Publish(message) => {
                    let flags = PublishFlags { mandatory: true, immediate: false };
                    self.publish(conn, 1, flags, message, now_ms, fx)
                }
            };
            if r.is_err() {
                break;
            }
        }
        let mut replies = AdminReplies::default();
        fx.out.retain(|(c, o)| {
            if *c == conn {
                replies.out.push(o.clone());
                false
            } else {
                true
            }
        });
        self.connection_closed(conn, now_ms, fx);
        fx.out.retain(|(c, _)| *c != conn);
        r.map(|_| replies)
    }

    /// Deletes a vhost with everything in it; its connections are closed with 320
    /// CONNECTION_FORCED. False when it did not exist.
    pub fn delete_vhost(&mut self, name: &str, fx: &mut Effects) -> bool {
        let Some(v) = self.vhosts.get(name) else { return false };
        let queues: Vec<_> = v.queues.values().copied().collect();
        for q in queues {
            self.delete_queue_by_id(q, fx);
        }
        for operator in [false, true] {
            let names: Vec<String> = self.policies(Some(name), operator).iter().map(|p| p.name.clone()).collect();
            for p in names {
                self.clear_policy(name, &p, operator, fx);
            }
        }
        let conns: Vec<ConnectionId> =
            self.connections.iter().filter(|(_, c)| c.vhost == name).map(|(id, _)| *id).collect();
        for c in conns {
            fx.push(
                c,
                Outbound::CloseConnection {
                    code: amqp_codec::reply::CONNECTION_FORCED,
                    text: vhost_deleted_text(name),
                },
            );
        }
        self.vhosts.remove(name);
        self.policies.retain(|p| p.vhost != name);
        self.vhost_limits.remove(name);
        let d = crate::Definition::VhostDeleted { name: name.to_owned() };
        self.journal.define(&d);
        self.auth.apply(&d);
        true
    }

    /// Adds a vhost (journaled). False when it existed.
    pub fn create_vhost(&mut self, name: &str) -> std::result::Result<bool, String> {
        if name.is_empty() {
            return Err("vhost name must not be empty".into());
        }
        Ok(self.add_vhost(name))
    }

    /// Asks a client connection to close (320 CONNECTION_FORCED with `reason`). False when no
    /// such connection is open.
    pub fn close_connection(&mut self, conn: ConnectionId, reason: &str, fx: &mut Effects) -> bool {
        if !self.connections.contains_key(&conn) || conn >= INTERNAL_CONNECTION_BASE {
            return false;
        }
        fx.push(conn, Outbound::CloseConnection { code: amqp_codec::reply::CONNECTION_FORCED, text: forced(reason) });
        true
    }

    /// Wipes every vhost, user and permission (and so every message), leaving a fresh node with
    /// the vhost "/" and no users; the caller creates the default user again. Connections are
    /// closed with 320.
    pub fn reset(&mut self, fx: &mut Effects) {
        let names: Vec<String> = self.vhosts.keys().cloned().collect();
        for n in names {
            self.delete_vhost(&n, fx);
        }
        let users: Vec<String> = self.auth.users.keys().cloned().collect();
        for u in users {
            self.delete_user(&u, fx);
        }
        let params: Vec<String> = self.global_parameters.keys().cloned().collect();
        for p in params {
            self.clear_global_parameter(&p);
        }
        self.add_vhost("/");
    }
}

fn forced(reason: &str) -> String {
    format!("CONNECTION_FORCED - {reason}")
}

fn vhost_deleted_text(name: &str) -> String {
    forced(&format!("vhost '{name}' is deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_codec::*;

    /// Proves an internal session declares through the normal path and that deleting the vhost
    /// removes its queues and closes its connections with 320.
    #[test]
    fn session_and_vhost_delete() {
        let mut b = Broker::default();
        let mut fx = Effects::default();
        assert!(b.create_vhost("v").expect("valid"));
        let declare = QueueDeclare { queue: "q".into(), durable: true, ..Default::default() };
        let r = b.admin_session("v", "guest", vec![AdminOp::Method(declare.into())], 0, &mut fx).expect("declared");
        assert!(r.methods().any(|m| matches!(m, Method::QueueDeclareOk(_))));
        assert!(b.queue("v", "q").is_some());
        assert!(b.connections.is_empty(), "the internal connection is closed");
        b.connection_open(7, "v", "guest", WriteCredit::new(1 << 20)).expect("open");
        assert!(b.delete_vhost("v", &mut fx));
        assert!(b.queue("v", "q").is_none() && !b.vhosts.contains_key("v"));
        assert!(fx.out.iter().any(|(c, o)| *c == 7
            && matches!(o, Outbound::CloseConnection { code: 320, text } if text == "CONNECTION_FORCED - vhost 'v' is deleted")));
    }

    /// Proves the API's get and publish report what happened.
    #[test]
    fn publish_and_get() {
        let mut b = Broker::default();
        let mut fx = Effects::default();
        let declare = QueueDeclare { queue: "q".into(), ..Default::default() };
        b.admin_session("/", "guest", vec![AdminOp::Method(declare.into())], 0, &mut fx).expect("declared");
        let m =
            |rk: &str| Message::with_properties("", rk, &BasicProperties::default(), bytes::Bytes::from_static(b"hi"));
        let r = b.admin_session("/", "guest", vec![AdminOp::Publish(m("q"))], 0, &mut fx).expect("published");
        assert!(!r.returned());
        let r = b.admin_session("/", "guest", vec![AdminOp::Publish(m("nowhere"))], 0, &mut fx).expect("published");
        assert!(r.returned());
        let get = BasicGet { queue: "q".into(), no_ack: false, ..Default::default() };
        let r = b.admin_session("/", "guest", vec![AdminOp::Method(get.into())], 0, &mut fx).expect("got");
        assert_eq!(r.got().len(), 1);
        assert_eq!(b.queue("/", "q").map(|q| q.message_count()), Some(1), "requeued when the session closed");
    }
}
