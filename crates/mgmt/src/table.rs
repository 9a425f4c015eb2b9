//! Listing parameters as RabbitMQ's management API takes them: `name` (substring, or a regular
//! expression with `use_regex=true`), `sort` (a dotted field path) and `sort_reverse`,
//! `columns` (dotted paths to keep), and `page`/`page_size`, which wrap the result in RabbitMQ's
//! page object.

use serde_json::{json, Map, Value};

use crate::{ApiError, Req, PAGE_SIZE_MAX};

/// The value at a dotted path such as `message_stats.publish`.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (x, y) => x.map(Value::to_string).cmp(&y.map(Value::to_string)),
    }
}

/// Keeps only `columns` (dotted paths) of an object.
fn prune(v: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for c in columns {
        if let Some(x) = at(v, c) {
            let parts: Vec<&str> = c.split('.').collect();
            insert_path(&mut out, &parts, x.clone());
        }
    }
    Value::Object(out)
}

fn insert_path(m: &mut Map<String, Value>, parts: &[&str], v: Value) {
    match parts {
        [] => {}
        [last] => {
            m.insert((*last).to_owned(), v);
        }
        [first, rest @ ..] => {
            if let Value::Object(o) = m.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new())) {
                insert_path(o, rest, v);
            }
        }
    }
}

/// Applies the listing parameters of `req` to `items`.
pub fn list(req: &Req, mut items: Vec<Value>) -> Result<Value, ApiError> {
    let total = items.len();
    if let Some(filter) = req.param("name").filter(|f| !f.is_empty()) {
        if req.flag("use_regex") {
            let re = regex::RegexBuilder::new(filter)
                .case_insensitive(true)
                .build()
                .map_err(|e| ApiError::bad_request(format!("invalid regular expression: {e}")))?;
            items.retain(|v| at(v, "name").and_then(Value::as_str).is_some_and(|n| re.is_match(n)));
        } else {
            let f = filter.to_lowercase();
            items.retain(|v| at(v, "name").and_then(Value::as_str).is_some_and(|n| n.to_lowercase().contains(&f)));
        }
    }
    if let Some(key) = req.param("sort").filter(|s| !s.is_empty()) {
        items.sort_by(|a, b| compare(at(a, key), at(b, key)));
    }
    if req.flag("sort_reverse") {
        items.reverse();
    }
    if let Some(cols) = req.param("columns").filter(|c| !c.is_empty()) {
        let cols: Vec<&str> = cols.split(',').collect();
        items = items.iter().map(|v| prune(v, &cols)).collect();
    }
    let Some(page) = req.param("page") else {
        return Ok(Value::Array(items));
    };
    let page: usize = page
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request("page must be a positive integer"))?;
    let page_size: usize = match req.param("page_size") {
        None => 100,
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_SIZE_MAX).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("page_size must be between 1 and {PAGE_SIZE_MAX}")))?,
    };
    let filtered = items.len();
    let page_count = filtered.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError::bad_request(format!("page out of range: {page} > {page_count}")));
    }
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * page_size).take(page_size).collect();
    Ok(json!({
        "filtered_count": filtered,
        "item_count": slice.len(),
        "items": slice,
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves dotted column paths keep nested fields and drop the rest.
    #[test]
    fn prunes_columns() {
        let v = json!({"name": "q", "messages": 3, "queue": {"name": "x", "vhost": "/"}});
        assert_eq!(prune(&v, &["name", "queue.vhost"]), json!({"name": "q", "queue": {"vhost": "/"}}));
    }
}
