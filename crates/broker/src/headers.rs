//! Headers-exchange matching with RabbitMQ's x-match modes: all, any, all-with-x, any-with-x.
//! Binding arguments whose names start with `x-` are ignored unless the mode ends in `-with-x`.
//! A binding value of type void matches any value of that header.

use amqp_codec::{FieldTable, FieldValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

/// The x-match argument, validated: RabbitMQ refuses unknown modes with 406 at bind time.
pub fn validate(args: &FieldTable) -> Result<(), String> {
    match args.get("x-match") {
        None => Ok(()),
        Some(v) => match v.as_str() {
            Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
            Some(other) => Err(format!(
                "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
            )),
            None => Err(format!(
                "Invalid x-match field value of type {}; expected all, any, all-with-x, or any-with-x",
                v.type_name()
            )),
        },
    }
}

/// True when a message with `headers` matches a binding with `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let (mode, with_x) = match args.get("x-match").and_then(FieldValue::as_str) {
        Some("any") => (Mode::Any, false),
        Some("all-with-x") => (Mode::All, true),
        Some("any-with-x") => (Mode::Any, true),
        _ => (Mode::All, false),
    };
    let empty = FieldTable::new();
    let headers = headers.unwrap_or(&empty);
    for (k, v) in args.iter() {
        if k == "x-match" || (!with_x && k.starts_with("x-")) {
            continue;
        }
        let hit = match headers.get(k) {
            None => false,
            Some(hv) => matches!(v, FieldValue::Void) || values_equal(v, hv),
        };
        match (mode, hit) {
            (Mode::All, false) => return false,
            (Mode::Any, true) => return true,
            _ => {}
        }
    }
    match mode {
        Mode::All => true,
        // RabbitMQ compat: `any` with no matching argument (or none at all) matches nothing.
        Mode::Any => false,
    }
}

fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    // RabbitMQ compares Erlang terms: integers of different wire types compare equal by value,
    // strings (longstr) compare by bytes.
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (FieldValue::LongStr(x) | FieldValue::ByteArray(x), FieldValue::LongStr(y) | FieldValue::ByteArray(y)) => {
                x == y
            }
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    /// Proves all/any and the -with-x variants follow RabbitMQ's rules.
    #[test]
    fn modes() {
        let h = t(&[("format", "pdf".into()), ("type", "report".into()), ("x-tag", "a".into())]);
        let all = t(&[("x-match", "all".into()), ("format", "pdf".into()), ("type", "report".into())]);
        let all_miss = t(&[("x-match", "all".into()), ("format", "pdf".into()), ("type", "log".into())]);
        let any = t(&[("x-match", "any".into()), ("format", "zip".into()), ("type", "report".into())]);
        let any_miss = t(&[("x-match", "any".into()), ("format", "zip".into())]);
        let x_ignored = t(&[("x-match", "all".into()), ("x-tag", "b".into())]);
        let x_all = t(&[("x-match", "all-with-x".into()), ("x-tag", "b".into())]);
        let x_any = t(&[("x-match", "any-with-x".into()), ("x-tag", "a".into())]);
        let void = t(&[("format", FieldValue::Void)]);
        assert!(matches(&all, Some(&h)));
        assert!(!matches(&all_miss, Some(&h)));
        assert!(matches(&any, Some(&h)));
        assert!(!matches(&any_miss, Some(&h)));
        assert!(matches(&x_ignored, Some(&h)));
        assert!(!matches(&x_all, Some(&h)));
        assert!(matches(&x_any, Some(&h)));
        assert!(matches(&void, Some(&h)));
        assert!(!matches(&all, None));
        assert!(matches(&t(&[("n", FieldValue::I32(5))]), Some(&t(&[("n", FieldValue::I64(5))]))));
    }
}
