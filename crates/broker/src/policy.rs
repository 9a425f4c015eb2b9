//! Policies and operator policies: queue and exchange settings applied by a regular expression on
//! the entity's name, as RabbitMQ's `set_policy` / `set_operator_policy`. Per vhost, the matching
//! policy with the highest priority applies (one policy, not a merge of several); then the
//! matching operator policy with the highest priority caps numeric settings.
//!
//! How a policy combines with the queue's own `x-` arguments (RabbitMQ's rules):
//! - `message-ttl`, `expires`, `max-length`, `max-length-bytes`, `delivery-limit`: the lower of
//!   the argument and the policy; an operator policy lowers it further (the minimum of all three).
//! - `dead-letter-exchange`, `dead-letter-routing-key`, `overflow`, `alternate-exchange`,
//!   `consumer-timeout`: the argument wins; the policy fills in when there is no argument.
//!
//! Policies apply to existing entities the moment they are set or cleared, and to entities
//! declared later. Keys Warren does not act on (`ha-mode`, `queue-mode`, federation keys...) are
//! accepted and stored, as scripts written for RabbitMQ set them.

use amqp_codec::{FieldTable, FieldValue};
use regex::Regex;

use crate::exchange::Exchange;
use crate::features::QueueFeatures;
use crate::journal::Definition;
use crate::queue::Queue;
use crate::{Broker, Effects, QueueId};

/// What a policy applies to (`--apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            // Every queue type is a classic queue here.
            "queues" | "classic_queues" | "quorum_queues" | "streams" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    fn queues(self) -> bool {
        self != ApplyTo::Exchanges
    }

    fn exchanges(self) -> bool {
        self != ApplyTo::Queues
    }
}

/// One policy or operator policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// The settings, with RabbitMQ's key names (`message-ttl`, `dead-letter-exchange`, ...).
    pub definition: FieldTable,
    pub operator: bool,
}

/// Numeric keys: the lowest of argument, policy and operator policy applies.
const MIN_KEYS: [&str; 5] = ["message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit"];
/// Keys an operator policy may set (RabbitMQ's list, less the ones that do not exist here).
const OPERATOR_KEYS: [&str; 6] =
    ["message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit", "max-in-memory-length"];

/// Checks a policy definition's known keys, with RabbitMQ-like reasons.
pub fn validate(definition: &FieldTable, operator: bool) -> Result<(), String> {
    if definition.iter().next().is_none() {
        return Err("Validation failed\n\nno policy provided".to_owned());
    }
    for (key, v) in definition.iter() {
        let ok = match key {
            "message-ttl" | "max-length" | "max-length-bytes" | "delivery-limit" | "consumer-timeout" => {
                v.as_i64().is_some_and(|i| i >= 0)
            }
            "expires" => v.as_i64().is_some_and(|i| i >= 1),
            "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => v.as_str().is_some(),
            "overflow" => matches!(v.as_str(), Some("drop-head" | "reject-publish" | "reject-publish-dlx")),
            _ => true,
        };
        if !ok {
            return Err(format!("Validation failed\n\n{} is not a valid value for {key}", describe(v)));
        }
        if operator && !OPERATOR_KEYS.contains(&key) {
            return Err(format!("Validation failed\n\n[<<\"{key}\">>] are not recognised operator policy settings"));
        }
    }
    if definition.get("dead-letter-routing-key").is_some() && definition.get("dead-letter-exchange").is_none() {
        return Err("Validation failed\n\ndead-letter-routing-key requires dead-letter-exchange".to_owned());
    }
    Ok(())
}

fn describe(v: &FieldValue) -> String {
    match v.as_str() {
        Some(s) => format!("\"{s}\""),
        None => v.as_i64().map_or_else(|| v.type_name().to_owned(), |i| i.to_string()),
    }
}

/// The queue arguments in force: the queue's `x-` arguments combined with the policy and the
/// operator policy that match it (see the module comment).
pub fn effective_arguments(args: &FieldTable, policy: Option<&Policy>, operator: Option<&Policy>) -> FieldTable {
    let mut out = args.clone();
    if let Some(p) = policy {
        for (key, v) in p.definition.iter() {
            let arg = format!("x-{key}");
            if MIN_KEYS.contains(&key) {
                let lower = match (out.get(&arg).and_then(FieldValue::as_i64), v.as_i64()) {
                    (Some(a), Some(b)) => a.min(b),
                    (None, Some(b)) => b,
                    _ => continue,
                };
                out.insert(&arg, FieldValue::I64(lower));
            } else if out.get(&arg).is_none() {
                out.insert(&arg, v.clone());
            }
        }
    }
    if let Some(op) = operator {
        for (key, v) in op.definition.iter() {
            let arg = format!("x-{key}");
            if let (true, Some(b)) = (MIN_KEYS.contains(&key), v.as_i64()) {
                let lower = out.get(&arg).and_then(FieldValue::as_i64).map_or(b, |a| a.min(b));
                out.insert(&arg, FieldValue::I64(lower));
            }
        }
    }
    out
}

/// Highest-priority policy of `list` for an entity of `vhost` called `name` (queues when
/// `queue`, else exchanges). Among equal priorities the one set last wins.
fn best<'a>(list: &'a [Policy], vhost: &str, name: &str, queue: bool, operator: bool) -> Option<&'a Policy> {
    list.iter()
        .filter(|p| p.operator == operator && p.vhost == vhost)
        .filter(|p| if queue { p.apply_to.queues() } else { p.apply_to.exchanges() })
        .filter(|p| p.regex.is_match(name))
        .fold(None, |best: Option<&Policy>, p| match best {
            Some(b) if b.priority > p.priority => Some(b),
            _ => Some(p),
        })
}

/// The `alternate-exchange` the policy in force gives an exchange.
pub(crate) fn alternate_for(list: &[Policy], vhost: &str, exchange: &str) -> Option<String> {
    best(list, vhost, exchange, false, false)
        .and_then(|p| p.definition.get("alternate-exchange"))
        .and_then(FieldValue::as_str)
        .map(str::to_owned)
}

impl Broker {
    /// Sets (adds or replaces) a policy or operator policy in `vhost` and applies it at once.
    /// Err carries the reason (bad pattern, bad definition, missing vhost).
    #[allow(clippy::too_many_arguments)]
    pub fn set_policy(
        &mut self,
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: FieldTable,
        operator: bool,
        fx: &mut Effects,
    ) -> Result<(), String> {
        if !self.vhosts.contains_key(vhost) {
            return Err(format!("vhost {vhost} not found"));
        }
        let apply_to = ApplyTo::parse(apply_to).ok_or_else(|| {
            format!("Validation failed\n\n\"{apply_to}\" is not a valid apply-to value (queues, exchanges or all)")
        })?;
        let regex = Regex::new(pattern).map_err(|e| format!("Validation failed\n\ninvalid pattern: {e}"))?;
        validate(&definition, operator)?;
        self.journal.define(&Definition::Policy {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            apply_to: apply_to.as_str().to_owned(),
            priority,
            definition: definition.clone(),
            operator,
        });
        let policy = Policy {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            regex,
            apply_to,
            priority,
            definition,
            operator,
        };
        self.policies.retain(|p| !(p.vhost == vhost && p.name == name && p.operator == operator));
        self.policies.push(policy);
        self.apply_policies(vhost, fx);
        Ok(())
    }

    /// Removes a policy; false when there is none of that name.
    pub fn clear_policy(&mut self, vhost: &str, name: &str, operator: bool, fx: &mut Effects) -> bool {
        let before = self.policies.len();
        self.policies.retain(|p| !(p.vhost == vhost && p.name == name && p.operator == operator));
        if self.policies.len() == before {
            return false;
        }
        self.journal.define(&Definition::PolicyDeleted { vhost: vhost.to_owned(), name: name.to_owned(), operator });
        self.apply_policies(vhost, fx);
        true
    }

    /// Policies (or operator policies) of `vhost`, or of every vhost.
    pub fn policies(&self, vhost: Option<&str>, operator: bool) -> Vec<&Policy> {
        let mut out: Vec<&Policy> =
            self.policies.iter().filter(|p| p.operator == operator && vhost.is_none_or(|v| p.vhost == v)).collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        out
    }

    /// The names of the policy and operator policy in force for a queue.
    pub fn queue_policies(&self, q: &Queue) -> (Option<&str>, Option<&str>) {
        (
            best(&self.policies, &q.vhost, &q.name, true, false).map(|p| p.name.as_str()),
            best(&self.policies, &q.vhost, &q.name, true, true).map(|p| p.name.as_str()),
        )
    }

    /// The name of the policy in force for an exchange.
    pub fn exchange_policy(&self, vhost: &str, x: &Exchange) -> Option<&str> {
        best(&self.policies, vhost, &x.name, false, false).map(|p| p.name.as_str())
    }

    /// Recovery: a journaled policy comes back (applied once every definition is restored).
    pub(crate) fn restore_policy(&mut self, d: Definition) {
        match d {
            Definition::Policy { vhost, name, pattern, apply_to, priority, definition, operator } => {
                let (Ok(regex), Some(apply_to)) = (Regex::new(&pattern), ApplyTo::parse(&apply_to)) else {
                    return;
                };
                self.policies.retain(|p| !(p.vhost == vhost && p.name == name && p.operator == operator));
                self.policies.push(Policy { vhost, name, pattern, regex, apply_to, priority, definition, operator });
            }
            Definition::PolicyDeleted { vhost, name, operator } => {
                self.policies.retain(|p| !(p.vhost == vhost && p.name == name && p.operator == operator));
            }
            _ => {}
        }
    }

    /// Re-derives the settings of every queue and exchange of `vhost` from their arguments and
    /// the policies now in force; returns the queues whose `x-expires` period changed.
    pub(crate) fn refresh_policies(&mut self, vhost: &str) -> Vec<QueueId> {
        let Some(v) = self.vhosts.get(vhost) else { return Vec::new() };
        let queues: Vec<QueueId> = v.queues.values().copied().collect();
        let changed = queues.into_iter().filter(|&qid| self.apply_queue_policy(qid)).collect();
        let policies = &self.policies;
        if let Some(v) = self.vhosts.get_mut(vhost) {
            for x in v.exchanges.values_mut() {
                x.policy_alternate = alternate_for(policies, vhost, &x.name);
            }
        }
        changed
    }

    /// `refresh_policies`, then restarts changed expiry periods and dispatches (limits may now
    /// drop messages).
    fn apply_policies(&mut self, vhost: &str, fx: &mut Effects) {
        for qid in self.refresh_policies(vhost) {
            if let Some(q) = self.queues.get_mut(&qid) {
                q.unused_deadline_ms = None;
            }
            self.touch_unused(qid);
        }
        self.run_dispatch(fx);
    }

    /// Applies the policies in force to one queue: its TTL, expiry, dead-lettering and limits.
    /// Returns true when its `x-expires` period changed (the caller restarts it).
    pub(crate) fn apply_queue_policy(&mut self, qid: QueueId) -> bool {
        let Some(q) = self.queues.get(&qid) else { return false };
        let policy = best(&self.policies, &q.vhost, &q.name, true, false);
        let operator = best(&self.policies, &q.vhost, &q.name, true, true);
        if policy.is_none() && operator.is_none() && !q.policy_applied {
            return false;
        }
        let effective = effective_arguments(&q.arguments, policy, operator);
        let applied = policy.is_some() || operator.is_some();
        let features = QueueFeatures::from_arguments(&effective);
        let Some(q) = self.queues.get_mut(&qid) else { return false };
        let expiry = |f: &Option<Box<QueueFeatures>>| f.as_ref().and_then(|f| f.expires_ms);
        let expires_changed = expiry(&q.features) != expiry(&features);
        q.features = features;
        q.policy_applied = applied;
        self.dirty.push(qid);
        expires_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn policy(priority: i64, pattern: &str, def: FieldTable, operator: bool) -> Policy {
        Policy {
            vhost: "/".into(),
            name: format!("p{priority}"),
            pattern: pattern.into(),
            regex: Regex::new(pattern).expect("regex"),
            apply_to: ApplyTo::Queues,
            priority,
            definition: def,
            operator,
        }
    }

    #[test]
    fn numeric_keys_take_the_minimum_and_arguments_win_the_rest() {
        let args =
            table(&[("x-message-ttl", FieldValue::I64(5000)), ("x-dead-letter-exchange", FieldValue::from("mine"))]);
        let p = policy(
            0,
            ".*",
            table(&[
                ("message-ttl", FieldValue::I64(1000)),
                ("max-length", FieldValue::I64(10)),
                ("dead-letter-exchange", FieldValue::from("theirs")),
                ("overflow", FieldValue::from("reject-publish")),
            ]),
            false,
        );
        let op = policy(0, ".*", table(&[("max-length", FieldValue::I64(3))]), true);
        let e = effective_arguments(&args, Some(&p), Some(&op));
        assert_eq!(e.get("x-message-ttl").and_then(FieldValue::as_i64), Some(1000));
        assert_eq!(e.get("x-max-length").and_then(FieldValue::as_i64), Some(3));
        assert_eq!(e.get("x-dead-letter-exchange").and_then(FieldValue::as_str), Some("mine"));
        assert_eq!(e.get("x-overflow").and_then(FieldValue::as_str), Some("reject-publish"));
    }

    #[test]
    fn highest_priority_wins_and_patterns_are_unanchored() {
        let list = vec![
            policy(1, "^orders", table(&[("max-length", FieldValue::I64(1))]), false),
            policy(5, "ord", table(&[("max-length", FieldValue::I64(5))]), false),
            policy(9, "^x$", table(&[("max-length", FieldValue::I64(9))]), false),
        ];
        assert_eq!(best(&list, "/", "orders.new", true, false).map(|p| p.priority), Some(5));
        assert_eq!(best(&list, "/", "x", true, false).map(|p| p.priority), Some(9));
        assert!(best(&list, "/", "other", true, false).is_none());
        assert!(best(&list, "other-vhost", "orders", true, false).is_none());
        assert!(best(&list, "/", "orders", false, false).is_none(), "queue policies do not apply to exchanges");
    }

    #[test]
    fn validation() {
        assert!(validate(&table(&[("message-ttl", FieldValue::I64(-1))]), false).is_err());
        assert!(validate(&table(&[("overflow", FieldValue::from("sideways"))]), false).is_err());
        assert!(validate(&table(&[("ha-mode", FieldValue::from("all"))]), false).is_ok());
        assert!(validate(&table(&[("dead-letter-exchange", FieldValue::from("x"))]), true).is_err());
        assert!(validate(&FieldTable::new(), false).is_err());
    }
}
