//! Users, password hashes, tags, per-vhost permissions and topic permissions, and the checks
//! every AMQP operation passes before it touches state (RabbitMQ's internal auth backend).
//!
//! Passwords are stored as RabbitMQ's `rabbit_password_hashing_sha256` does: base64 of a 4-byte
//! salt followed by SHA-256(salt ‖ password), so definitions exported from RabbitMQ import and
//! their users log in. The broker draws no random numbers: callers bring the salt. Every change
//! is journaled as a `Definition` before it applies, so users and permissions survive restarts.
//! This module does no I/O.

use crate::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

use amqp_codec::{FieldTable, FieldValue, Method};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::exchange::ExchangeKind;
use crate::{AmqpError, Broker, ConnectionId, Definition, Message, Result};

/// The only hashing algorithm Warren writes (and reads).
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// The tags RabbitMQ's management plugin and CLI know.
pub const KNOWN_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management", "impersonator"];

/// `password_hash` for `password` with `salt`: base64(salt ‖ SHA-256(salt ‖ password)).
pub fn hash_password(password: &str, salt: [u8; 4]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// True when `password` matches `password_hash` (compared in constant time). An empty hash
/// never matches: RabbitMQ users without a password cannot log in with one.
pub fn check_password(password: &str, password_hash: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(password_hash) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let salt = [raw[0], raw[1], raw[2], raw[3]];
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    constant_time_eq(&h.finalize(), &raw[4..])
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    /// Empty when the user has no password (it cannot log in with PLAIN/AMQPLAIN).
    pub password_hash: String,
    pub tags: Vec<String>,
}

impl User {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// A regular expression as RabbitMQ applies it: unanchored (`re:run`), so `^$` matches only
/// the empty name and `.*` everything.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    /// None for `.*`, which matches everything without running a regex (the common case on the
    /// publish path).
    regex: Option<regex::Regex>,
    /// Contains `{username}` or `{vhost}`, expanded at each check.
    templated: bool,
}

impl Pattern {
    pub fn new(source: &str) -> std::result::Result<Pattern, String> {
        let templated = source.contains("{username}") || source.contains("{vhost}");
        let regex = if source == ".*" {
            None
        } else if source.is_empty() {
            // RabbitMQ compat: an empty pattern means "^$" (matches nothing but the empty name).
            Some(regex::Regex::new("^$").map_err(|e| e.to_string())?)
        } else if templated {
            // Topic permission variables are expanded per check; validate with a stand-in.
            let probe = source.replace("{username}", "u").replace("{vhost}", "v");
            regex::Regex::new(&probe).map_err(|e| format!("invalid regular expression '{source}': {e}"))?;
            None
        } else {
            Some(regex::Regex::new(source).map_err(|e| format!("invalid regular expression '{source}': {e}"))?)
        };
        Ok(Pattern { source: source.to_owned(), regex, templated })
    }
    pub fn matches(&self, name: &str) -> bool {
        match &self.regex {
            None => !self.templated || self.matches_expanded(name, "", ""),
            Some(r) => r.is_match(name),
        }
    }
    /// With RabbitMQ's variable expansion for topic permissions (`{username}`, `{vhost}`).
    fn matches_expanded(&self, name: &str, user: &str, vhost: &str) -> bool {
        if !self.templated {
            return self.matches(name);
        }
        let expanded =
            self.source.replace("{username}", &regex::escape(user)).replace("{vhost}", &regex::escape(vhost));
        regex::Regex::new(&expanded).is_ok_and(|r| r.is_match(name))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Permissions {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: Pattern,
    pub read: Pattern,
}

/// What an operation needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// Peer details of a client connection, kept for listings (the broker needs none of them).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMeta {
    pub name: String,
    pub peer_host: String,
    pub peer_port: u16,
    pub host: String,
    pub port: u16,
    pub client_properties: amqp_codec::FieldTable,
    pub connected_at_ms: u64,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_secs: u16,
    pub auth_mechanism: String,
    /// The connection came in on the AMQPS (TLS) listener.
    pub tls: bool,
    /// Bytes and reads/writes on the socket, counted by the connection's tasks without the
    /// broker lock (RabbitMQ's `recv_oct`, `recv_cnt`, `send_oct`, `send_cnt`).
    pub io: Arc<IoCounters>,
}

/// Socket traffic of one connection.
#[derive(Debug, Default)]
pub struct IoCounters {
    pub recv_oct: std::sync::atomic::AtomicU64,
    pub recv_cnt: std::sync::atomic::AtomicU64,
    pub send_oct: std::sync::atomic::AtomicU64,
    pub send_cnt: std::sync::atomic::AtomicU64,
}

impl IoCounters {
    pub fn received(&self, bytes: usize) {
        self.recv_oct.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn sent(&self, bytes: usize) {
        self.send_oct.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        self.send_cnt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The user database and its permissions.
#[derive(Debug, Default)]
pub struct Auth {
    pub users: BTreeMap<String, User>,
    /// vhost → user → permissions.
    pub permissions: BTreeMap<String, BTreeMap<String, Permissions>>,
    /// vhost → user → topic permissions (one per exchange).
    pub topic_permissions: BTreeMap<String, BTreeMap<String, Vec<TopicPermission>>>,
    /// True once any user definition was created or restored: the default user is made only
    /// on a node that never had one (RabbitMQ's first-start behaviour).
    pub initialized: bool,
    /// Peer details of open connections (see `Broker::set_connection_meta`).
    pub connection_meta: HashMap<ConnectionId, Arc<ConnectionMeta>>,
    /// Counts the internal connections of API sessions (see `admin.rs`).
    pub next_internal_connection: u64,
    /// Bumped by every change to users and permissions: invalidates the per-connection cache of
    /// the last exchange a publish was allowed to (`ConnectionState::publish_ok`).
    pub generation: u64,
    /// Vhosts' metadata, by vhost name (absent: empty description, no tags, classic).
    pub vhost_metadata: BTreeMap<String, VhostMetadata>,
    /// Users' connection and channel limits, by user name (see `limits.rs`).
    pub user_limits: BTreeMap<String, crate::limits::UserLimits>,
}

/// RabbitMQ's vhost metadata: shown and exported, not acted on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VhostMetadata {
    pub description: String,
    pub tags: Vec<String>,
    pub default_queue_type: String,
}

fn refused(kind: &str, name: &str, vhost: &str, user: &str) -> AmqpError {
    AmqpError::access_refused(format!("access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"))
}

impl Auth {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// May publish messages whose `user_id` names another user: the `impersonator` tag (as
    /// RabbitMQ), and trusted internal sessions (user "").
    pub fn may_impersonate(&self, user: &str) -> bool {
        user.is_empty() || self.users.get(user).is_some_and(|u| u.has_tag("impersonator"))
    }

    pub fn permissions_of(&self, vhost: &str, user: &str) -> Option<&Permissions> {
        self.permissions.get(vhost)?.get(user)
    }

    /// Checks `access` to an exchange or queue (`kind`) named `name` for `user` in `vhost`.
    pub fn check(&self, user: &str, vhost: &str, kind: &str, name: &str, access: Access) -> Result<()> {
        // RabbitMQ compat: the default exchange is "amq.default" for permission purposes.
        let name = if kind == "exchange" && name.is_empty() { "amq.default" } else { name };
        let ok = self.permissions_of(vhost, user).is_some_and(|p| match access {
            Access::Configure => p.configure.matches(name),
            Access::Write => p.write.matches(name),
            Access::Read => p.read.matches(name),
        });
        if ok {
            Ok(())
        } else {
            Err(refused(kind, name, vhost, user))
        }
    }

    /// Topic permission on `routing_key` through topic exchange `exchange`. Allowed when the
    /// user has no topic permission for that exchange (as RabbitMQ).
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        access: Access,
    ) -> Result<()> {
        let Some(list) = self.topic_permissions.get(vhost).and_then(|m| m.get(user)) else {
            return Ok(());
        };
        let Some(tp) = list.iter().find(|t| t.exchange == exchange) else {
            return Ok(());
        };
        let p = if access == Access::Write { &tp.write } else { &tp.read };
        if p.matches_expanded(routing_key, user, vhost) {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
            )))
        }
    }

    /// Applies a journaled (or just journaled) user or permission definition. Returns false for
    /// definitions of other kinds.
    pub fn apply(&mut self, d: &Definition) -> bool {
        self.generation += 1;
        match d {
            Definition::User { name, password_hash, tags } => {
                self.initialized = true;
                let user = User { name: name.clone(), password_hash: password_hash.clone(), tags: tags.clone() };
                self.users.insert(name.clone(), user);
            }
            Definition::UserDeleted { name } => {
                self.initialized = true;
                self.users.remove(name);
                self.user_limits.remove(name);
                for m in self.permissions.values_mut() {
                    m.remove(name);
                }
                for m in self.topic_permissions.values_mut() {
                    m.remove(name);
                }
            }
            Definition::Permission { vhost, user, configure, write, read } => {
                // Patterns were validated when first set; a bad one read back denies everything.
                let p =
                    |s: &str| Pattern::new(s).unwrap_or_else(|_| Pattern::new("^$").expect("'^$' is a valid regex"));
                let perms = Permissions { configure: p(configure), write: p(write), read: p(read) };
                self.permissions.entry(vhost.clone()).or_default().insert(user.clone(), perms);
            }
            Definition::PermissionCleared { vhost, user } => {
                if let Some(m) = self.permissions.get_mut(vhost) {
                    m.remove(user);
                }
            }
            Definition::TopicPermission { vhost, user, exchange, write, read } => {
                let p =
                    |s: &str| Pattern::new(s).unwrap_or_else(|_| Pattern::new("^$").expect("'^$' is a valid regex"));
                let list = self.topic_permissions.entry(vhost.clone()).or_default().entry(user.clone()).or_default();
                list.retain(|t| &t.exchange != exchange);
                list.push(TopicPermission { exchange: exchange.clone(), write: p(write), read: p(read) });
            }
            Definition::TopicPermissionCleared { vhost, user, exchange } => {
                if let Some(list) = self.topic_permissions.get_mut(vhost).and_then(|m| m.get_mut(user)) {
                    list.retain(|t| exchange.as_deref().is_some_and(|e| e != t.exchange));
                }
            }
            Definition::VhostDeleted { name } => {
                self.permissions.remove(name);
                self.topic_permissions.remove(name);
                self.vhost_metadata.remove(name);
                return false;
            }
            Definition::UserLimits { user, max_connections, max_channels } => {
                let l = crate::limits::UserLimits { max_connections: *max_connections, max_channels: *max_channels };
                if l.is_empty() {
                    self.user_limits.remove(user);
                } else {
                    self.user_limits.insert(user.clone(), l);
                }
            }
            Definition::VhostMetadata { name, description, tags, default_queue_type } => {
                let meta = VhostMetadata {
                    description: description.clone(),
                    tags: tags.clone(),
                    default_queue_type: default_queue_type.clone(),
                };
                self.vhost_metadata.insert(name.clone(), meta);
            }
            _ => return false,
        }
        true
    }
}

/// Writes a user or permission definition into its journal table (see `journal.rs`).
pub(crate) fn encode_definition(d: &Definition, t: &mut FieldTable) {
    let mut put = |k: &str, v: &str| t.insert(k, FieldValue::from(v));
    match d {
        Definition::User { name, password_hash, tags } => {
            put("t", "user");
            put("name", name);
            put("password_hash", password_hash);
            put("tags", &tags.join(","));
        }
        Definition::UserDeleted { name } => {
            put("t", "user-deleted");
            put("name", name);
        }
        Definition::Permission { vhost, user, configure, write, read } => {
            put("t", "permission");
            put("vhost", vhost);
            put("user", user);
            put("configure", configure);
            put("write", write);
            put("read", read);
        }
        Definition::PermissionCleared { vhost, user } => {
            put("t", "permission-cleared");
            put("vhost", vhost);
            put("user", user);
        }
        Definition::TopicPermission { vhost, user, exchange, write, read } => {
            put("t", "topic-permission");
            put("vhost", vhost);
            put("user", user);
            put("exchange", exchange);
            put("write", write);
            put("read", read);
        }
        Definition::VhostMetadata { name, description, tags, default_queue_type } => {
            put("t", "vhost-metadata");
            put("name", name);
            put("description", description);
            put("tags", &tags.join(","));
            put("default_queue_type", default_queue_type);
        }
        Definition::TopicPermissionCleared { vhost, user, exchange } => {
            put("t", "topic-permission-cleared");
            put("vhost", vhost);
            put("user", user);
            if let Some(e) = exchange {
                put("exchange", e);
            }
        }
        Definition::UserLimits { user, max_connections, max_channels } => {
            put("t", "user-limits");
            put("user", user);
            for (k, v) in [("max-connections", max_connections), ("max-channels", max_channels)] {
                if let Some(n) = v {
                    t.insert(k, FieldValue::I64(*n));
                }
            }
        }
        _ => {}
    }
}

/// Reads a definition of record kind `kind` written by `encode_definition`.
pub(crate) fn decode_definition(kind: &str, t: &FieldTable) -> Option<Definition> {
    let s = |k: &str| t.get(k).and_then(FieldValue::as_str).map(str::to_owned);
    Some(match kind {
        "user" => Definition::User {
            name: s("name")?,
            password_hash: s("password_hash")?,
            tags: s("tags")?.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect(),
        },
        "user-deleted" => Definition::UserDeleted { name: s("name")? },
        "vhost-metadata" => Definition::VhostMetadata {
            name: s("name")?,
            description: s("description")?,
            tags: s("tags")?.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect(),
            default_queue_type: s("default_queue_type")?,
        },
        "permission" => Definition::Permission {
            vhost: s("vhost")?,
            user: s("user")?,
            configure: s("configure")?,
            write: s("write")?,
            read: s("read")?,
        },
        "permission-cleared" => Definition::PermissionCleared { vhost: s("vhost")?, user: s("user")? },
        "topic-permission" => Definition::TopicPermission {
            vhost: s("vhost")?,
            user: s("user")?,
            exchange: s("exchange")?,
            write: s("write")?,
            read: s("read")?,
        },
        "user-limits" => Definition::UserLimits {
            user: s("user")?,
            max_connections: t.get("max-connections").and_then(FieldValue::as_i64),
            max_channels: t.get("max-channels").and_then(FieldValue::as_i64),
        },
        "topic-permission-cleared" => {
            Definition::TopicPermissionCleared { vhost: s("vhost")?, user: s("user")?, exchange: s("exchange") }
        }
        _ => return None,
    })
}

/// Why a login failed; the server turns each into RabbitMQ's 403 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password.
    Refused,
    /// A loopback-only user (guest) connecting from another address.
    LoopbackOnly,
}

impl Broker {
    /// Checks a user's password (PLAIN, AMQPLAIN, HTTP Basic). `loopback` says whether the
    /// peer address is a loopback one; the default user `loopback_user` may only log in from
    /// there (RabbitMQ's `loopback_users`).
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        loopback: bool,
        loopback_user: &str,
    ) -> std::result::Result<&User, LoginError> {
        let u = self.auth.users.get(user).ok_or(LoginError::Refused)?;
        if !check_password(password, &u.password_hash) {
            return Err(LoginError::Refused);
        }
        if !loopback && user == loopback_user {
            return Err(LoginError::LoopbackOnly);
        }
        Ok(u)
    }

    /// EXTERNAL: the TLS layer vouched for `user` (a verified client certificate names it); it
    /// must exist, and the loopback rule applies as for a password login.
    pub fn authenticate_external(
        &self,
        user: &str,
        loopback: bool,
        loopback_user: &str,
    ) -> std::result::Result<&User, LoginError> {
        let u = self.auth.users.get(user).ok_or(LoginError::Refused)?;
        if !loopback && user == loopback_user {
            return Err(LoginError::LoopbackOnly);
        }
        Ok(u)
    }

    /// connection.open: may `user` use `vhost`? 530 NOT_ALLOWED with RabbitMQ's text when not.
    pub fn check_vhost_access(&self, user: &str, vhost: &str) -> Result<()> {
        if !self.vhosts.contains_key(vhost) {
            return Err(AmqpError::not_allowed(format!("vhost {vhost} not found")));
        }
        // RabbitMQ checks the limits before the permissions.
        self.check_connection_limit(vhost, user)?;
        self.check_user_connection_limit(user)?;
        if self.auth.permissions_of(vhost, user).is_none() {
            return Err(AmqpError::not_allowed(format!("access to vhost '{vhost}' refused for user '{user}'")));
        }
        Ok(())
    }

    /// Checks the permissions a content-less method needs (RabbitMQ's table in its
    /// access-control guide) for the connection's user. Called before the method runs.
    pub fn authorize(&self, conn: ConnectionId, method: &Method) -> Result<()> {
        let Some(state) = self.connections.get(&conn) else { return Ok(()) };
        if state.user.is_empty() {
            // A trusted internal session (the local control client, see `admin.rs`).
            return Ok(());
        }
        let (user, vhost) = (state.user.as_str(), state.vhost.as_str());
        let a = &self.auth;
        let ex = "exchange";
        let q = "queue";
        match method {
            Method::ExchangeDeclare(m) if !m.passive => {
                a.check(user, vhost, ex, &m.exchange, Access::Configure)?;
                if let Some(ae) = m.arguments.get("alternate-exchange").and_then(|v| v.as_str()) {
                    a.check(user, vhost, ex, ae, Access::Write)?;
                    a.check(user, vhost, ex, &m.exchange, Access::Read)?;
                }
            }
            Method::ExchangeDelete(m) => a.check(user, vhost, ex, &m.exchange, Access::Configure)?,
            Method::ExchangeBind(m) => {
                a.check(user, vhost, ex, &m.destination, Access::Write)?;
                a.check(user, vhost, ex, &m.source, Access::Read)?;
                self.check_topic_bind(user, vhost, &m.source, &m.routing_key)?;
            }
            Method::ExchangeUnbind(m) => {
                a.check(user, vhost, ex, &m.destination, Access::Write)?;
                a.check(user, vhost, ex, &m.source, Access::Read)?;
                self.check_topic_bind(user, vhost, &m.source, &m.routing_key)?;
            }
            Method::QueueDeclare(m) if !m.passive => {
                // A server-named queue is checked under its prefix (the name is made later).
                let name = if m.queue.is_empty() { "amq.gen-" } else { m.queue.as_str() };
                a.check(user, vhost, q, name, Access::Configure)?;
                if let Some(dlx) = m.arguments.get("x-dead-letter-exchange").and_then(|v| v.as_str()) {
                    a.check(user, vhost, ex, dlx, Access::Write)?;
                    a.check(user, vhost, q, name, Access::Read)?;
                }
            }
            Method::QueueDelete(m) => a.check(user, vhost, q, &m.queue, Access::Configure)?,
            Method::QueueBind(m) => {
                a.check(user, vhost, q, &m.queue, Access::Write)?;
                a.check(user, vhost, ex, &m.exchange, Access::Read)?;
                self.check_topic_bind(user, vhost, &m.exchange, &m.routing_key)?;
            }
            Method::QueueUnbind(m) => {
                a.check(user, vhost, q, &m.queue, Access::Write)?;
                a.check(user, vhost, ex, &m.exchange, Access::Read)?;
                self.check_topic_bind(user, vhost, &m.exchange, &m.routing_key)?;
            }
            Method::QueuePurge(m) => a.check(user, vhost, q, &m.queue, Access::Read)?,
            Method::BasicGet(m) => a.check(user, vhost, q, &m.queue, Access::Read)?,
            Method::BasicConsume(m) if m.queue != crate::REPLY_TO_QUEUE => {
                a.check(user, vhost, q, &m.queue, Access::Read)?
            }
            _ => {}
        }
        Ok(())
    }

    fn check_topic_bind(&self, user: &str, vhost: &str, exchange: &str, routing_key: &str) -> Result<()> {
        if self.exchange_is_topic(vhost, exchange) {
            self.auth.check_topic(user, vhost, exchange, routing_key, Access::Read)?;
        }
        Ok(())
    }

    fn exchange_is_topic(&self, vhost: &str, exchange: &str) -> bool {
        self.vhosts.get(vhost).and_then(|v| v.exchanges.get(exchange)).is_some_and(|x| x.kind == ExchangeKind::Topic)
    }

    /// basic.publish needs write on the exchange, and topic permission on the routing key for
    /// topic exchanges.
    pub fn authorize_publish(&self, conn: ConnectionId, message: &Message) -> Result<()> {
        let Some(state) = self.connections.get(&conn) else { return Ok(()) };
        if state.user.is_empty() {
            // A trusted internal session (the local control client, see `admin.rs`).
            return Ok(());
        }
        // The hot path: the same exchange as the last publish, nothing changed since.
        if let Some((generation, exchange)) = &*state.publish_ok.borrow() {
            if *generation == self.auth.generation && *exchange == message.exchange {
                return Ok(());
            }
        }
        let (user, vhost) = (state.user.as_str(), state.vhost.as_str());
        self.auth.check(user, vhost, "exchange", &message.exchange, Access::Write)?;
        if self.auth.topic_permissions.contains_key(vhost) && self.exchange_is_topic(vhost, &message.exchange) {
            // Depends on the routing key: not cached.
            return self.auth.check_topic(user, vhost, &message.exchange, &message.routing_key, Access::Write);
        }
        *state.publish_ok.borrow_mut() = Some((self.auth.generation, message.exchange.clone()));
        Ok(())
    }

    /// Records and applies an auth definition.
    fn define_auth(&mut self, d: Definition) {
        self.journal.define(&d);
        self.auth.apply(&d);
    }

    /// Creates or replaces a user (`password_hash` from `hash_password`, or empty for none).
    pub fn put_user(&mut self, name: &str, password_hash: &str, tags: &[String]) -> std::result::Result<(), String> {
        if name.is_empty() {
            return Err("user name must not be empty".into());
        }
        if !password_hash.is_empty() {
            let ok = base64::engine::general_purpose::STANDARD.decode(password_hash).is_ok_and(|r| r.len() == 36);
            if !ok {
                return Err(format!("password_hash of user '{name}' is not a {HASHING_ALGORITHM} hash"));
            }
        }
        let mut tags: Vec<String> = tags.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        tags.dedup();
        self.define_auth(Definition::User { name: name.to_owned(), password_hash: password_hash.to_owned(), tags });
        Ok(())
    }

    /// Deletes a user and its permissions, and closes its connections with 320 (RabbitMQ's
    /// `user 'u' is deleted`). False when it did not exist.
    pub fn delete_user(&mut self, name: &str, fx: &mut crate::Effects) -> bool {
        if !self.auth.users.contains_key(name) {
            return false;
        }
        self.define_auth(Definition::UserDeleted { name: name.to_owned() });
        let conns: Vec<ConnectionId> =
            self.connections.iter().filter(|(_, c)| c.user == name).map(|(id, _)| *id).collect();
        for c in conns {
            self.close_connection(c, &format!("user '{name}' is deleted"), fx);
        }
        true
    }

    pub fn set_permissions(
        &mut self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> std::result::Result<(), String> {
        if !self.vhosts.contains_key(vhost) {
            return Err(format!("vhost '{vhost}' does not exist"));
        }
        if !self.auth.users.contains_key(user) {
            return Err(format!("user '{user}' does not exist"));
        }
        for p in [configure, write, read] {
            Pattern::new(p)?;
        }
        self.define_auth(Definition::Permission {
            vhost: vhost.to_owned(),
            user: user.to_owned(),
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        });
        Ok(())
    }

    /// False when there was nothing to clear.
    pub fn clear_permissions(&mut self, vhost: &str, user: &str) -> bool {
        if self.auth.permissions_of(vhost, user).is_none() {
            return false;
        }
        self.define_auth(Definition::PermissionCleared { vhost: vhost.to_owned(), user: user.to_owned() });
        true
    }

    pub fn set_topic_permissions(
        &mut self,
        vhost: &str,
        user: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> std::result::Result<(), String> {
        if !self.vhosts.contains_key(vhost) {
            return Err(format!("vhost '{vhost}' does not exist"));
        }
        if !self.auth.users.contains_key(user) {
            return Err(format!("user '{user}' does not exist"));
        }
        for p in [write, read] {
            Pattern::new(p)?;
        }
        self.define_auth(Definition::TopicPermission {
            vhost: vhost.to_owned(),
            user: user.to_owned(),
            exchange: exchange.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        });
        Ok(())
    }

    /// Clears one exchange's topic permission, or all of the user's in the vhost (None).
    pub fn clear_topic_permissions(&mut self, vhost: &str, user: &str, exchange: Option<&str>) -> bool {
        let exists = self
            .auth
            .topic_permissions
            .get(vhost)
            .and_then(|m| m.get(user))
            .is_some_and(|l| l.iter().any(|t| exchange.is_none_or(|e| e == t.exchange)));
        if exists {
            self.define_auth(Definition::TopicPermissionCleared {
                vhost: vhost.to_owned(),
                user: user.to_owned(),
                exchange: exchange.map(str::to_owned),
            });
        }
        exists
    }

    /// Sets a vhost's description, tags and default queue type (journaled). Err when the vhost
    /// does not exist.
    pub fn set_vhost_metadata(
        &mut self,
        name: &str,
        description: &str,
        tags: &[String],
        default_queue_type: &str,
    ) -> std::result::Result<(), String> {
        if !self.vhosts.contains_key(name) {
            return Err(format!("vhost '{name}' does not exist"));
        }
        let meta = VhostMetadata {
            description: description.to_owned(),
            tags: tags.to_vec(),
            default_queue_type: default_queue_type.to_owned(),
        };
        if self.auth.vhost_metadata.get(name) == Some(&meta) {
            return Ok(());
        }
        self.define_auth(Definition::VhostMetadata {
            name: name.to_owned(),
            description: meta.description,
            tags: meta.tags,
            default_queue_type: meta.default_queue_type,
        });
        Ok(())
    }

    /// True when no user was ever defined on this node (first start).
    pub fn auth_uninitialized(&self) -> bool {
        !self.auth.initialized
    }

    /// The user database, for listings and exports.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Remembers a connection's peer details for listings; forgets those of closed connections.
    pub fn set_connection_meta(&mut self, conn: ConnectionId, meta: ConnectionMeta) {
        // Forget closed connections once they outnumber the open ones: amortised O(1) per open.
        if self.auth.connection_meta.len() >= 2 * self.connections.len() + 64 {
            let connections = &self.connections;
            self.auth.connection_meta.retain(|c, _| connections.contains_key(c));
        }
        self.auth.connection_meta.insert(conn, Arc::new(meta));
    }

    pub fn connection_meta(&self, conn: ConnectionId) -> Option<&ConnectionMeta> {
        self.auth.connection_meta.get(&conn).map(|m| &**m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_codec::*;

    /// Proves the hash format against vectors computed independently with Python's hashlib:
    /// base64.b64encode(salt + hashlib.sha256(salt + password).digest()).
    #[test]
    fn password_hash_vectors() {
        assert_eq!(
            hash_password("guest", [0x90, 0x8d, 0xc6, 0x0a]),
            "kI3GCrswBLNZQzHJJ95QLoyfAVooYhnvf7jbqiW9BjOYUloe"
        );
        assert_eq!(hash_password("", [0, 0, 0, 0]), "AAAAAN8/YZgEqS/bQFcZLcQ910jqd4rcUrxJjOgFJMAUuBEZ");
        assert!(check_password("guest", "kI3GCrswBLNZQzHJJ95QLoyfAVooYhnvf7jbqiW9BjOYUloe"));
        assert!(!check_password("guesT", "kI3GCrswBLNZQzHJJ95QLoyfAVooYhnvf7jbqiW9BjOYUloe"));
        assert!(!check_password("guest", ""));
        assert!(!check_password("guest", "not base64!"));
        let h = hash_password("s3cret", [1, 2, 3, 4]);
        assert!(check_password("s3cret", &h) && !check_password("s3cre", &h));
    }

    /// Proves patterns are unanchored regexes as in RabbitMQ: "^$" matches only "", ".*" all,
    /// "foo" any name containing it.
    #[test]
    fn patterns_match_like_rabbitmq() {
        let p = |s: &str| Pattern::new(s).expect("valid");
        assert!(p("^$").matches("") && !p("^$").matches("q"));
        assert!(p(".*").matches("anything") && p(".*").matches(""));
        assert!(p("foo").matches("a-foo-b") && !p("^foo$").matches("a-foo-b"));
        assert!(!p("").matches("q") && p("").matches(""), "an empty pattern is '^$'");
        assert!(Pattern::new("(").is_err());
    }

    fn broker_with_user(configure: &str, write: &str, read: &str) -> Broker {
        let mut b = Broker::default();
        b.put_user("u", &hash_password("p", [9, 9, 9, 9]), &[]).expect("user");
        b.set_permissions("/", "u", configure, write, read).expect("perms");
        b.connection_open(1, "/", "u", crate::WriteCredit::new(1 << 20)).expect("open");
        b.channel_open(1, 1);
        b
    }

    fn declare(q: &str) -> Method {
        QueueDeclare { queue: q.into(), ..Default::default() }.into()
    }

    /// Proves configure, write and read are each enforced with RabbitMQ's 403 text.
    #[test]
    fn operations_need_their_permission() {
        let mut b = broker_with_user("^q1$", "^$", "^$");
        let mut fx = crate::Effects::default();
        b.handle(1, 1, declare("q1"), 0, &mut fx).expect("configure granted");
        let e = b.handle(1, 1, declare("q2"), 0, &mut fx).expect_err("configure refused");
        assert_eq!(e.reply_text(), "ACCESS_REFUSED - access to queue 'q2' in vhost '/' refused for user 'u'");
        let get = BasicGet { queue: "q1".into(), ..Default::default() };
        let e = b.handle(1, 1, get.into(), 0, &mut fx).expect_err("read refused");
        assert_eq!(e.code, reply::ACCESS_REFUSED);
        let m = Message::with_properties("", "q1", &BasicProperties::default(), bytes::Bytes::from_static(b"x"));
        let e = b.publish(1, 1, crate::PublishFlags::default(), m, 0, &mut fx).expect_err("write refused");
        assert_eq!(e.text, "access to exchange 'amq.default' in vhost '/' refused for user 'u'");
        // Changes apply to the next operation at once.
        b.set_permissions("/", "u", ".*", ".*", ".*").expect("perms");
        let m = Message::with_properties("", "q1", &BasicProperties::default(), bytes::Bytes::from_static(b"x"));
        b.publish(1, 1, crate::PublishFlags::default(), m, 0, &mut fx).expect("write granted");
        b.clear_permissions("/", "u");
        assert_eq!(b.check_vhost_access("u", "/").expect_err("no access").code, reply::NOT_ALLOWED);
        let mut fx = crate::Effects::default();
        assert!(b.delete_user("u", &mut fx));
        assert!(fx.out.iter().any(|(c, o)| *c == 1
            && matches!(o, crate::Outbound::CloseConnection { code: 320, text } if text == "CONNECTION_FORCED - user 'u' is deleted")));
        assert_eq!(b.check_vhost_access("u", "nope").expect_err("no vhost").text, "vhost nope not found");
    }

    /// Proves topic permissions limit routing keys on topic exchanges only.
    #[test]
    fn topic_permissions() {
        let mut b = broker_with_user(".*", ".*", ".*");
        b.set_topic_permissions("/", "u", "amq.topic", "^a\\.", "^{username}\\.").expect("topic perms");
        let mut fx = crate::Effects::default();
        let publish = |b: &mut Broker, x: &str, rk: &str| {
            let m = Message::with_properties(x, rk, &BasicProperties::default(), bytes::Bytes::new());
            b.publish(1, 1, crate::PublishFlags::default(), m, 0, &mut crate::Effects::default())
        };
        publish(&mut b, "amq.topic", "a.b").expect("allowed key");
        let e = publish(&mut b, "amq.topic", "b.a").expect_err("refused key");
        assert_eq!(e.text, "access to topic 'b.a' in exchange 'amq.topic' in vhost '/' refused for user 'u'");
        b.channel_open(1, 2);
        publish(&mut b, "amq.direct", "b.a").expect("not a topic exchange");
        let with_user_id = |b: &mut Broker| {
            let props = BasicProperties { user_id: Some("someone".into()), ..Default::default() };
            let m = Message::with_properties("amq.direct", "k", &props, bytes::Bytes::new());
            b.publish(1, 1, crate::PublishFlags::default(), m, 0, &mut crate::Effects::default())
        };
        assert_eq!(with_user_id(&mut b).expect_err("not its user id").code, reply::PRECONDITION_FAILED);
        b.put_user("u", &hash_password("p", [9, 9, 9, 9]), &["impersonator".into()]).expect("user");
        with_user_id(&mut b).expect("an impersonator may set another user id");
        b.handle(1, 2, declare("q"), 0, &mut fx).expect("declare");
        let bind = |rk: &str| -> Method {
            QueueBind { queue: "q".into(), exchange: "amq.topic".into(), routing_key: rk.into(), ..Default::default() }
                .into()
        };
        b.handle(1, 2, bind("u.x"), 0, &mut fx).expect("read key allowed");
        b.handle(1, 2, bind("v.x"), 0, &mut fx).expect_err("read key refused");
    }

    /// Proves users and permissions survive a journal replay, and deleting a user drops its
    /// permissions.
    #[test]
    fn definitions_replay() {
        let mut a = Auth::default();
        let defs = [
            Definition::User { name: "u".into(), password_hash: hash_password("p", [1, 1, 1, 1]), tags: vec![] },
            Definition::Permission {
                vhost: "/".into(),
                user: "u".into(),
                configure: ".*".into(),
                write: "".into(),
                read: "x".into(),
            },
        ];
        for d in &defs {
            assert!(a.apply(d));
            let bytes = crate::journal::encode_definition(d);
            assert_eq!(crate::journal::decode_definition(&bytes).as_ref(), Some(d));
        }
        let cleared = Definition::TopicPermissionCleared { vhost: "/".into(), user: "u".into(), exchange: None };
        assert_eq!(crate::journal::decode_definition(&crate::journal::encode_definition(&cleared)), Some(cleared));
        let meta = Definition::VhostMetadata {
            name: "v".into(),
            description: "main".into(),
            tags: vec!["a".into(), "b".into()],
            default_queue_type: "quorum".into(),
        };
        assert_eq!(crate::journal::decode_definition(&crate::journal::encode_definition(&meta)).as_ref(), Some(&meta));
        assert!(a.apply(&meta));
        assert_eq!(a.vhost_metadata["v"].tags, ["a", "b"]);
        a.apply(&Definition::VhostDeleted { name: "v".into() });
        assert!(a.vhost_metadata.is_empty());
        assert!(a.permissions_of("/", "u").is_some());
        a.apply(&Definition::UserDeleted { name: "u".into() });
        assert!(a.permissions_of("/", "u").is_none() && a.users.is_empty() && a.initialized);
    }
}
