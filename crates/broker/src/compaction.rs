//! Compaction of the definitions log: the broker's whole durable state as definitions, written
//! in place of the history of declarations and deletions that led to it (see
//! `Journal::compact_definitions`). Without it, an application that declares and deletes durable
//! queues all day would grow the log, and the next recovery's replay, without bound.

use crate::journal::Definition;
use crate::{exchange::Destination, Broker};

impl Broker {
    /// Every durable definition in force, in an order that replays: vhosts, users and their
    /// permissions, policies, exchanges, queues, then bindings (whose ends must exist), and the
    /// queue id floor. Replaying it on a new broker gives this broker's durable state; replaying
    /// it after any older records too (each record overwrites or re-adds what it names).
    pub fn definitions_snapshot(&self) -> Vec<Definition> {
        let mut out = Vec::new();
        // A new broker starts with "/", so its absence must be said.
        if !self.vhosts.contains_key("/") {
            out.push(Definition::VhostDeleted { name: "/".to_owned() });
        }
        let mut vhosts: Vec<&String> = self.vhosts.keys().collect();
        vhosts.sort();
        for name in &vhosts {
            out.push(Definition::Vhost { name: (*name).clone() });
            if let Some(m) = self.auth.vhost_metadata.get(*name) {
                out.push(Definition::VhostMetadata {
                    name: (*name).clone(),
                    description: m.description.clone(),
                    tags: m.tags.clone(),
                    default_queue_type: m.default_queue_type.clone(),
                });
            }
        }
        for (name, value) in &self.global_parameters {
            out.push(Definition::GlobalParameter { name: name.clone(), value: value.clone() });
        }
        for (vhost, l) in &self.vhost_limits {
            out.push(Definition::VhostLimits {
                vhost: vhost.clone(),
                max_connections: l.max_connections,
                max_queues: l.max_queues,
            });
        }
        for u in self.auth.users.values() {
            out.push(Definition::User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            });
        }
        for (user, l) in &self.auth.user_limits {
            out.push(Definition::UserLimits {
                user: user.clone(),
                max_connections: l.max_connections,
                max_channels: l.max_channels,
            });
        }
        if self.auth.initialized && self.auth.users.is_empty() {
            // Every user was deleted: without a user record, the next start would create the
            // default user again. Deleting a user that does not exist changes nothing else.
            out.push(Definition::UserDeleted { name: String::new() });
        }
        for (vhost, users) in &self.auth.permissions {
            for (user, p) in users {
                out.push(Definition::Permission {
                    vhost: vhost.clone(),
                    user: user.clone(),
                    configure: p.configure.source.clone(),
                    write: p.write.source.clone(),
                    read: p.read.source.clone(),
                });
            }
        }
        for (vhost, users) in &self.auth.topic_permissions {
            for (user, list) in users {
                for t in list {
                    out.push(Definition::TopicPermission {
                        vhost: vhost.clone(),
                        user: user.clone(),
                        exchange: t.exchange.clone(),
                        write: t.write.source.clone(),
                        read: t.read.source.clone(),
                    });
                }
            }
        }
        for p in &self.policies {
            out.push(Definition::Policy {
                vhost: p.vhost.clone(),
                name: p.name.clone(),
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.as_str().to_owned(),
                priority: p.priority,
                definition: p.definition.clone(),
                operator: p.operator,
            });
        }
        let mut bindings = Vec::new();
        for name in &vhosts {
            let v = &self.vhosts[*name];
            let mut exchanges: Vec<_> = v.exchanges.values().filter(|x| x.durable && !x.name.is_empty()).collect();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for x in &exchanges {
                out.push(Definition::Exchange {
                    vhost: (*name).clone(),
                    name: x.name.clone(),
                    kind: x.kind,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: x.arguments.clone(),
                });
            }
            let mut queues: Vec<_> = v.queues.values().filter_map(|id| self.queues.get(id)).collect();
            queues.sort_by_key(|q| q.id);
            for q in queues.into_iter().filter(|q| q.durable && q.exclusive_owner.is_none()) {
                out.push(Definition::Queue {
                    id: q.id,
                    vhost: (*name).clone(),
                    name: q.name.clone(),
                    auto_delete: q.auto_delete,
                    arguments: q.arguments.clone(),
                });
            }
            // As `apply_binding` journals them: a durable source and a durable destination.
            for x in &exchanges {
                for b in &x.bindings {
                    let destination = match &b.destination {
                        Destination::Queue(id) => match self.queues.get(id) {
                            Some(q) if q.durable && q.exclusive_owner.is_none() => Some((true, id.to_string())),
                            _ => None,
                        },
                        Destination::Exchange(e) => {
                            v.exchanges.get(e).filter(|d| d.durable).map(|_| (false, e.clone()))
                        }
                    };
                    if let Some((to_queue, destination)) = destination {
                        bindings.push(Definition::Binding {
                            vhost: (*name).clone(),
                            source: x.name.clone(),
                            to_queue,
                            destination,
                            routing_key: b.routing_key.clone(),
                            arguments: b.arguments.clone(),
                        });
                    }
                }
            }
        }
        out.append(&mut bindings);
        out.push(Definition::QueueIdFloor { next: self.next_queue_id });
        out
    }

    /// Compacts the definitions log when the journal says it is due; true when it did. Called
    /// by the server's timer thread and after recovery.
    pub fn compact_definitions_if_due(&mut self) -> bool {
        if !self.journal.definitions_compaction_due() {
            return false;
        }
        let snapshot = self.definitions_snapshot();
        self.journal.compact_definitions(&snapshot);
        true
    }
}
