//! Virtual host limits (RabbitMQ's `set_vhost_limits`): the most connections and queues a vhost
//! may have. A negative limit means none; 0 allows nothing. Journaled as definitions.

use crate::error::{AmqpError, Result};
use crate::journal::Definition;
use crate::Broker;

/// The limits of one vhost; None is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
}

/// Limit names as RabbitMQ spells them (JSON keys of `set_vhost_limits` and the HTTP API).
pub const MAX_CONNECTIONS: &str = "max-connections";
pub const MAX_QUEUES: &str = "max-queues";

impl VhostLimits {
    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }

    /// Sets one limit by its RabbitMQ name; false for an unknown name.
    pub fn set(&mut self, name: &str, value: Option<i64>) -> bool {
        match name {
            MAX_CONNECTIONS => self.max_connections = value,
            MAX_QUEUES => self.max_queues = value,
            _ => return false,
        }
        true
    }

    /// (name, value) of each limit set.
    pub fn entries(&self) -> Vec<(&'static str, i64)> {
        [(MAX_CONNECTIONS, self.max_connections), (MAX_QUEUES, self.max_queues)]
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect()
    }
}

/// The limits of one user; None is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub max_connections: Option<i64>,
    pub max_channels: Option<i64>,
}

pub const MAX_CHANNELS: &str = "max-channels";

impl UserLimits {
    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_channels.is_none()
    }

    /// Sets one limit by its RabbitMQ name; false for an unknown name.
    pub fn set(&mut self, name: &str, value: Option<i64>) -> bool {
        match name {
            MAX_CONNECTIONS => self.max_connections = value,
            MAX_CHANNELS => self.max_channels = value,
            _ => return false,
        }
        true
    }

    /// (name, value) of each limit set.
    pub fn entries(&self) -> Vec<(&'static str, i64)> {
        [(MAX_CONNECTIONS, self.max_connections), (MAX_CHANNELS, self.max_channels)]
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect()
    }
}

/// A limit that is reached with `count` in use.
fn reached(limit: Option<i64>, count: usize) -> Option<i64> {
    limit.filter(|&l| l >= 0 && count as u64 >= l as u64)
}

impl Broker {
    /// The vhost's limits (all None when it has none).
    pub fn vhost_limits(&self, vhost: &str) -> VhostLimits {
        self.vhost_limits.get(vhost).copied().unwrap_or_default()
    }

    /// Every vhost with a limit, by name.
    pub fn all_vhost_limits(&self) -> Vec<(String, VhostLimits)> {
        self.vhost_limits.iter().map(|(v, l)| (v.clone(), *l)).collect()
    }

    /// Replaces the vhost's limits (empty limits clear them); journaled.
    pub fn set_vhost_limits(&mut self, vhost: &str, limits: VhostLimits) -> std::result::Result<(), String> {
        if !self.vhosts.contains_key(vhost) {
            return Err(format!("vhost '{vhost}' does not exist"));
        }
        let d = Definition::VhostLimits {
            vhost: vhost.to_owned(),
            max_connections: limits.max_connections,
            max_queues: limits.max_queues,
        };
        self.journal.define(&d);
        self.restore_vhost_limits(vhost, limits);
        Ok(())
    }

    pub(crate) fn restore_vhost_limits(&mut self, vhost: &str, limits: VhostLimits) {
        if limits.is_empty() {
            self.vhost_limits.remove(vhost);
        } else {
            self.vhost_limits.insert(vhost.to_owned(), limits);
        }
    }

    /// The user's limits (all None when it has none).
    pub fn user_limits(&self, user: &str) -> UserLimits {
        self.auth.user_limits.get(user).copied().unwrap_or_default()
    }

    /// Every user with a limit, by name.
    pub fn all_user_limits(&self) -> Vec<(String, UserLimits)> {
        self.auth.user_limits.iter().map(|(u, l)| (u.clone(), *l)).collect()
    }

    /// Replaces the user's limits (empty limits clear them); journaled.
    pub fn set_user_limits(&mut self, user: &str, limits: UserLimits) -> std::result::Result<(), String> {
        if !self.auth.users.contains_key(user) {
            return Err(format!("user '{user}' does not exist"));
        }
        let d = Definition::UserLimits {
            user: user.to_owned(),
            max_connections: limits.max_connections,
            max_channels: limits.max_channels,
        };
        self.journal.define(&d);
        self.auth.apply(&d);
        Ok(())
    }

    /// connection.open: 530 NOT_ALLOWED with RabbitMQ's text when the user has its most
    /// connections already.
    pub(crate) fn check_user_connection_limit(&self, user: &str) -> Result<()> {
        let Some(limit) = self.auth.user_limits.get(user).and_then(|l| l.max_connections) else { return Ok(()) };
        let open = self.connections.values().filter(|c| c.user == user).count();
        match reached(Some(limit), open) {
            Some(l) => Err(AmqpError::not_allowed(format!(
                "Connection refused for user '{user}': user connection limit ({l}) is reached"
            ))),
            None => Ok(()),
        }
    }

    /// channel.open: 530 NOT_ALLOWED (a connection error) with RabbitMQ's text when the
    /// connection's user has its most channels open already, across its connections.
    pub fn check_channel_limit(&self, conn: crate::ConnectionId) -> Result<()> {
        let Some(user) = self.connections.get(&conn).map(|c| c.user.as_str()) else { return Ok(()) };
        let Some(limit) = self.auth.user_limits.get(user).and_then(|l| l.max_channels) else { return Ok(()) };
        let open =
            self.channels.keys().filter(|(c, _)| self.connections.get(c).is_some_and(|s| s.user == user)).count();
        match reached(Some(limit), open) {
            Some(l) => Err(AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({l})"
            ))),
            None => Ok(()),
        }
    }

    /// connection.open: 530 NOT_ALLOWED with RabbitMQ's text when the vhost has its most
    /// connections already.
    pub(crate) fn check_connection_limit(&self, vhost: &str, user: &str) -> Result<()> {
        let Some(limit) = self.vhost_limits.get(vhost).and_then(|l| l.max_connections) else { return Ok(()) };
        let open = self.connections.values().filter(|c| c.vhost == vhost && !c.user.is_empty()).count();
        match reached(Some(limit), open) {
            Some(l) => Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}': connection limit ({l}) is reached"
            ))),
            None => Ok(()),
        }
    }

    /// queue.declare of a new queue: 406 PRECONDITION_FAILED with RabbitMQ's text when the vhost
    /// has its most queues already.
    pub(crate) fn check_queue_limit(&self, vhost: &str, queue: &str) -> Result<()> {
        let Some(limit) = self.vhost_limits.get(vhost).and_then(|l| l.max_queues) else { return Ok(()) };
        let count = self.vhosts.get(vhost).map_or(0, |v| v.queues.len());
        match reached(Some(limit), count) {
            Some(l) => Err(AmqpError::precondition_failed(format!(
                "cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({l}) is reached"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Effects, WriteCredit};
    use amqp_codec::QueueDeclare;

    fn declare(b: &mut Broker, conn: u64, name: &str) -> Result<()> {
        b.handle(conn, 1, QueueDeclare { queue: name.into(), ..Default::default() }.into(), 0, &mut Effects::default())
    }

    /// Proves the connection and queue limits refuse with RabbitMQ's codes and texts once
    /// reached, that a negative limit is none, and that deleting the vhost forgets its limits.
    #[test]
    fn limits_refuse_past_the_limit() {
        let mut b = Broker::default();
        b.put_user("u", "", &[]).expect("user");
        b.set_permissions("/", "u", ".*", ".*", ".*").expect("permissions");
        b.set_vhost_limits("/", VhostLimits { max_connections: Some(1), max_queues: Some(2) }).expect("limits");
        b.check_vhost_access("u", "/").expect("first connection");
        b.connection_open(1, "/", "u", WriteCredit::new(1 << 20)).expect("opens");
        let e = b.check_vhost_access("u", "/").expect_err("second connection");
        assert_eq!(e.code, 530);
        assert_eq!(
            e.reply_text(),
            "NOT_ALLOWED - access to vhost '/' refused for user 'u': connection limit (1) is reached"
        );
        b.channel_open(1, 1);
        declare(&mut b, 1, "q1").expect("first queue");
        declare(&mut b, 1, "q2").expect("second queue");
        declare(&mut b, 1, "q2").expect("redeclaring an existing queue is not a new one");
        let e = declare(&mut b, 1, "q3").expect_err("third queue");
        assert_eq!(e.code, 406);
        assert_eq!(
            e.reply_text(),
            "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '/' (2) is reached"
        );
        b.set_vhost_limits("/", VhostLimits { max_connections: Some(-1), max_queues: None }).expect("limits");
        declare(&mut b, 1, "q3").expect("no queue limit");
        b.check_vhost_access("u", "/").expect("a negative limit is none");
        b.add_vhost("v");
        b.set_vhost_limits("v", VhostLimits { max_connections: Some(0), max_queues: None }).expect("limits");
        b.delete_vhost("v", &mut Effects::default());
        b.add_vhost("v");
        assert!(b.vhost_limits("v").is_empty());
        assert!(b.set_vhost_limits("missing", VhostLimits::default()).is_err());
    }
}
