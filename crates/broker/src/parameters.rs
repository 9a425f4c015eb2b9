//! Global runtime parameters (RabbitMQ's `set_global_parameter`): named JSON values kept by the
//! node and journaled as definitions. `cluster_name` is one of them: RabbitMQ's cluster name,
//! shown to clients in connection.start and by the HTTP API and `cluster_status`. The broker keeps
//! each value as JSON text and does not interpret it; the server and the HTTP API do.

use crate::journal::Definition;
use crate::Broker;

/// The global parameter that holds the cluster name (a JSON string).
pub const CLUSTER_NAME: &str = "cluster_name";

/// Longest parameter name and JSON value accepted: a bound on what a client can make the node
/// keep and journal.
pub const NAME_MAX: usize = 255;
pub const VALUE_MAX: usize = 64 * 1024;

impl Broker {
    /// Every global parameter, by name: (name, value as JSON text).
    pub fn global_parameters(&self) -> Vec<(String, String)> {
        self.global_parameters.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// One global parameter's value, as JSON text.
    pub fn global_parameter(&self, name: &str) -> Option<&str> {
        self.global_parameters.get(name).map(String::as_str)
    }

    /// Sets a global parameter (`value` is JSON text, checked by the caller); journaled.
    pub fn set_global_parameter(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(format!("a parameter name must have 1 to {NAME_MAX} bytes"));
        }
        if value.len() > VALUE_MAX {
            return Err(format!("a parameter value may have at most {VALUE_MAX} bytes"));
        }
        self.journal.define(&Definition::GlobalParameter { name: name.to_owned(), value: value.to_owned() });
        self.global_parameters.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Clears a global parameter; false when it was not set. Journaled.
    pub fn clear_global_parameter(&mut self, name: &str) -> bool {
        if self.global_parameters.remove(name).is_none() {
            return false;
        }
        self.journal.define(&Definition::GlobalParameterCleared { name: name.to_owned() });
        true
    }

    /// The cluster name: the `cluster_name` parameter when it is a JSON string, else, as in
    /// RabbitMQ, the node's name.
    pub fn cluster_name(&self) -> String {
        self.global_parameter(CLUSTER_NAME)
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .unwrap_or_else(|| self.config.node_name.clone())
    }

    pub(crate) fn restore_global_parameter(&mut self, name: String, value: Option<String>) {
        match value {
            Some(v) => {
                self.global_parameters.insert(name, v);
            }
            None => {
                self.global_parameters.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves parameters are set, replaced, listed and cleared, and that names and values
    /// past their bounds are refused.
    #[test]
    fn set_replace_clear_and_bounds() {
        let mut b = Broker::default();
        assert_eq!(b.cluster_name(), b.config.node_name, "unset: the node's name");
        b.set_global_parameter(CLUSTER_NAME, "\"one\"").expect("set");
        b.set_global_parameter(CLUSTER_NAME, "\"two\"").expect("replaced");
        b.set_global_parameter("other", "{\"a\":1}").expect("set");
        assert_eq!(b.global_parameter(CLUSTER_NAME), Some("\"two\""));
        assert_eq!(b.cluster_name(), "two");
        assert_eq!(b.global_parameters().len(), 2);
        assert!(b.clear_global_parameter("other"));
        assert!(!b.clear_global_parameter("other"), "already cleared");
        assert!(b.set_global_parameter("", "1").is_err());
        assert!(b.set_global_parameter(&"n".repeat(NAME_MAX + 1), "1").is_err());
        assert!(b.set_global_parameter("big", &"1".repeat(VALUE_MAX + 1)).is_err());
        assert_eq!(b.global_parameters(), vec![(CLUSTER_NAME.to_owned(), "\"two\"".to_owned())]);
    }
}
