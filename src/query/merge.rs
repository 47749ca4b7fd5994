//! Merging the answers of several backends to one statement into the answer one InfluxDB would give.
//!
//! Input: per backend, the statement's result object (`{"statement_id":..,"series":[..]}` or
//! `{"error":".."}`) or why the backend could not answer. Output: one result object.
//! * `Show`: series matched by name and tags; their rows united, de-duplicated and sorted; then the
//!   statement's OFFSET and LIMIT applied to each series' rows.
//! * `Series`: series matched by name and tags; the first backend's copy of a series wins (replicas
//!   hold the same points), series sorted by name and tags as InfluxDB sorts them.
//! * `Broadcast`: the first error if any backend failed, else the first answer.
//!
//! Backends that could not answer are named in a `messages` warning, as InfluxDB reports warnings.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::plan::MergeKind;

/// One backend's answer to one statement.
pub type PartAnswer = Result<Value, String>;

/// Merges the answers of `parts` (backend name, answer).
pub fn merge(kind: Option<MergeKind>, parts: Vec<(String, PartAnswer)>, warnings: Vec<String>) -> Value {
    let mut warnings = warnings;
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for (backend, part) in parts {
        match part {
            Ok(v) => match v.get("error").and_then(Value::as_str) {
                Some(e) => errors.push((backend, e.to_string())),
                None => answers.push(v),
            },
            Err(e) => {
                warnings.push(format!("backend {backend} did not answer: {e}"));
            }
        }
    }
    let mut result = match kind {
        // Broadcast: every backend must have applied it.
        None => match errors.first() {
            Some((b, e)) => json!({ "error": format!("{e} (backend {b})") }),
            None => answers.into_iter().next().unwrap_or_else(|| json!({})),
        },
        Some(_) if answers.is_empty() => match errors.into_iter().next() {
            Some((_, e)) => json!({ "error": e }),
            None => json!({ "error": "no backend could answer this statement" }),
        },
        Some(kind_) => {
            for (b, e) in errors {
                warnings.push(format!("backend {b}: {e}"));
            }
            merge_series(kind_, answers)
        }
    };
    if !warnings.is_empty()
        && let Some(obj) = result.as_object_mut()
    {
        let messages: Vec<Value> = warnings.into_iter().map(|t| json!({"level": "warning", "text": t})).collect();
        obj.insert("messages".into(), Value::Array(messages));
    }
    result
}

/// The identity of a series: name and tags.
fn series_key(s: &Value) -> String {
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    let tags = s.get("tags").map(Value::to_string).unwrap_or_default();
    format!("{name}\u{0}{tags}")
}

fn merge_series(kind: MergeKind, answers: Vec<Value>) -> Value {
    let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
    let mut partial = false;
    for answer in answers {
        partial |= answer.get("partial").and_then(Value::as_bool).unwrap_or(false);
        let Some(Value::Array(series)) = answer.get("series").cloned() else {
            continue;
        };
        for s in series {
            let key = series_key(&s);
            match (kind, by_key.get_mut(&key)) {
                (MergeKind::Show { .. }, Some(existing)) => {
                    let more = s.get("values").and_then(Value::as_array).cloned().unwrap_or_default();
                    if let Some(Value::Array(rows)) = existing.get_mut("values") {
                        rows.extend(more);
                    }
                }
                (MergeKind::Series, Some(_)) => {}
                (_, None) => {
                    by_key.insert(key, s);
                }
            }
        }
    }
    if let MergeKind::Show { limit, offset } = kind {
        for s in by_key.values_mut() {
            if let Some(Value::Array(rows)) = s.get_mut("values") {
                rows.sort_by(compare_rows);
                rows.dedup();
                let skip = offset.unwrap_or(0) as usize;
                let keep = limit.map_or(usize::MAX, |l| l as usize);
                *rows = rows.drain(..).skip(skip).take(keep).collect();
            }
        }
        // InfluxDB leaves a series out when LIMIT/OFFSET leave it no rows.
        by_key.retain(|_, s| s.get("values").and_then(Value::as_array).is_none_or(|r| !r.is_empty()));
    }
    let mut obj = Map::new();
    if !by_key.is_empty() {
        obj.insert("series".into(), Value::Array(by_key.into_values().collect()));
    }
    if partial {
        obj.insert("partial".into(), Value::Bool(true));
    }
    Value::Object(obj)
}

/// Row order: column by column, strings and numbers by value.
fn compare_rows(a: &Value, b: &Value) -> Ordering {
    match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => {
            for (x, y) in a.iter().zip(b) {
                let o = compare_values(x, y);
                if o != Ordering::Equal {
                    return o;
                }
            }
            a.len().cmp(&b.len())
        }
        _ => compare_values(a, b),
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Puts statement results together into one response body, in statement order.
pub fn assemble(results: Vec<Value>, pretty: bool) -> Vec<u8> {
    let body = json!({ "results": results });
    let mut out = if pretty {
        serde_json::to_vec_pretty(&body).unwrap_or_default()
    } else {
        serde_json::to_vec(&body).unwrap_or_default()
    };
    out.push(b'\n');
    out
}

/// Sets `statement_id` first in a result object, as InfluxDB orders it.
pub fn with_statement_id(result: Value, id: usize) -> Value {
    let mut obj = Map::new();
    obj.insert("statement_id".into(), json!(id));
    if let Value::Object(fields) = result {
        for (k, v) in fields {
            if k != "statement_id" {
                obj.insert(k, v);
            }
        }
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurements(names: &[&str]) -> Value {
        let rows: Vec<Value> = names.iter().map(|n| json!([n])).collect();
        json!({"statement_id": 0, "series": [{"name": "measurements", "columns": ["name"], "values": rows}]})
    }

    #[test]
    fn show_rows_are_united_sorted_deduplicated_then_limited() {
        let parts = vec![
            ("a".to_string(), Ok(measurements(&["mem", "cpu"]))),
            ("b".to_string(), Ok(measurements(&["disk", "cpu"]))),
            ("c".to_string(), Err("connection refused".to_string())),
        ];
        let r = merge(Some(MergeKind::Show { limit: Some(2), offset: Some(1) }), parts, vec![]);
        assert_eq!(r["series"][0]["values"], json!([["disk"], ["mem"]]));
        assert_eq!(r["messages"][0]["level"], "warning");
        assert!(r["messages"][0]["text"].as_str().unwrap().contains("backend c"));
    }

    #[test]
    fn an_offset_past_the_end_leaves_no_series() {
        let parts = vec![("a".to_string(), Ok(measurements(&["cpu"])))];
        let r = merge(Some(MergeKind::Show { limit: None, offset: Some(5) }), parts, vec![]);
        assert_eq!(r, json!({}));
    }

    #[test]
    fn series_from_replicas_are_taken_once() {
        let s = |host: &str, v: i64| json!({"name": "cpu", "tags": {"host": host}, "columns": ["time", "v"], "values": [[1, v]]});
        let parts = vec![
            ("a".to_string(), Ok(json!({"series": [s("b", 1), s("a", 1)]}))),
            ("b".to_string(), Ok(json!({"series": [s("a", 2), s("c", 3)]}))),
        ];
        let r = merge(Some(MergeKind::Series), parts, vec![]);
        let hosts: Vec<&str> =
            r["series"].as_array().unwrap().iter().map(|s| s["tags"]["host"].as_str().unwrap()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(r["series"][0]["values"], json!([[1, 1]]));
    }

    #[test]
    fn errors() {
        let parts = vec![("a".to_string(), Ok(json!({"error": "database not found: x"})))];
        assert_eq!(merge(Some(MergeKind::Series), parts, vec![])["error"], "database not found: x");
        let parts = vec![("a".to_string(), Ok(json!({}))), ("b".to_string(), Ok(json!({"error": "boom"})))];
        assert_eq!(merge(None, parts, vec![])["error"], "boom (backend b)");
        let parts = vec![("a".to_string(), Ok(json!({"statement_id": 0})))];
        assert_eq!(merge(None, parts, vec!["backend z is down".into()])["messages"][0]["text"], "backend z is down");
    }

    #[test]
    fn assembled_in_order_with_ids() {
        let body = assemble(vec![with_statement_id(json!({"series": []}), 0), with_statement_id(json!({}), 1)], false);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"results\":[{\"statement_id\":0,\"series\":[]},{\"statement_id\":1}]}\n"
        );
    }
}
