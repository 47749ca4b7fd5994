//! Points read back from InfluxDB (JSON, `epoch=ns`) turned into line protocol that stores exactly the
//! same points: tags as tags, each field with its declared type, nanosecond timestamps.
//!
//! InfluxDB's JSON does not say whether `1` is a float or an integer; `SHOW FIELD KEYS` does, so every
//! field is written with the type it was stored with (`1i` for integers, `1` for floats, quoted and
//! escaped strings, `true`/`false`). A tag and a field with the same key stay apart: tags come from the
//! series (`GROUP BY *`), fields from explicitly typed columns (`"k"::field`).

use std::fmt::Write;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Integer,
    String,
    Boolean,
}

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        match s {
            "float" => Some(FieldType::Float),
            "integer" => Some(FieldType::Integer),
            "string" => Some(FieldType::String),
            "boolean" => Some(FieldType::Boolean),
            _ => None,
        }
    }
}

/// Escapes a measurement name (`,` and space).
pub fn escape_measurement(out: &mut String, s: &str) {
    escape(out, s, &[',', ' ']);
}

/// Escapes a tag key, tag value or field key (`,`, `=` and space).
pub fn escape_key(out: &mut String, s: &str) {
    escape(out, s, &[',', '=', ' ']);
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The start of every line of one series: `measurement,tag=v,...` (tags sorted, empty values left out,
/// as InfluxDB reports a tag the series does not have).
pub fn series_key(measurement: &str, tags: &[(String, String)]) -> String {
    let mut out = String::new();
    escape_measurement(&mut out, measurement);
    let mut sorted: Vec<&(String, String)> = tags.iter().filter(|(_, v)| !v.is_empty()).collect();
    sorted.sort();
    for (k, v) in sorted {
        out.push(',');
        escape_key(&mut out, k);
        out.push('=');
        escape_key(&mut out, v);
    }
    out
}

/// Why a value could not be written as its field type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn push_value(out: &mut String, t: FieldType, v: &Value) -> Result<(), ValueError> {
    let bad = || ValueError(format!("value {v} is not a {t:?}"));
    match t {
        FieldType::Float => {
            let f = v.as_f64().ok_or_else(bad)?;
            // Rust prints the shortest text that reads back as the same f64.
            let _ = write!(out, "{f}");
        }
        FieldType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                let _ = write!(out, "{n}i");
            }
            _ => return Err(bad()),
        },
        FieldType::String => {
            let s = v.as_str().ok_or_else(bad)?;
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        FieldType::Boolean => {
            let b = v.as_bool().ok_or_else(bad)?;
            out.push_str(if b { "true" } else { "false" });
        }
    }
    Ok(())
}

/// Appends one line per row of `values` (rows of `[time, field1, field2, ...]` as `fields` lists them)
/// to `out`; rows where every field is null are skipped. Returns the lines written and the last time.
pub fn rows_to_lines(
    key: &str,
    fields: &[(String, FieldType)],
    values: &[Value],
    out: &mut String,
) -> Result<(u64, Option<i64>), ValueError> {
    let mut lines = 0;
    let mut last = None;
    for row in values {
        let Some(row) = row.as_array() else { continue };
        let Some(time) = row.first().and_then(Value::as_i64) else {
            return Err(ValueError("a row without an integer time (epoch=ns expected)".into()));
        };
        last = Some(time);
        let start = out.len();
        out.push_str(key);
        let mut sep = ' ';
        for ((name, t), v) in fields.iter().zip(row.iter().skip(1)) {
            if v.is_null() {
                continue;
            }
            out.push(sep);
            sep = ',';
            escape_key(out, name);
            out.push('=');
            push_value(out, *t, v)?;
        }
        if sep == ' ' {
            out.truncate(start);
            continue;
        }
        let _ = writeln!(out, " {time}");
        lines += 1;
    }
    Ok((lines, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_keep_types_tags_and_escapes() {
        let key =
            series_key("c pu,x", &[("host".into(), "a b".into()), ("dc".into(), "".into()), ("k".into(), "t".into())]);
        assert_eq!(key, "c\\ pu\\,x,host=a\\ b,k=t");
        let fields = vec![
            ("f".to_string(), FieldType::Float),
            ("i".to_string(), FieldType::Integer),
            ("s".to_string(), FieldType::String),
            ("b".to_string(), FieldType::Boolean),
            ("k".to_string(), FieldType::Float),
        ];
        let rows = vec![
            json!([1, 1, 2, "say \"hi\" \\o/", true, 0.5]),
            json!([2, 0.1, -9007199254740993i64, null, false, null]),
            json!([3, null, null, null, null, null]),
        ];
        let mut out = String::new();
        let (n, last) = rows_to_lines(&key, &fields, &rows, &mut out).unwrap();
        assert_eq!((n, last), (2, Some(3)));
        assert_eq!(
            out,
            "c\\ pu\\,x,host=a\\ b,k=t f=1,i=2i,s=\"say \\\"hi\\\" \\\\o/\",b=true,k=0.5 1\n\
             c\\ pu\\,x,host=a\\ b,k=t f=0.1,i=-9007199254740993i,b=false 2\n"
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let mut out = String::new();
        let fields = vec![("i".to_string(), FieldType::Integer)];
        assert!(rows_to_lines("m", &fields, &[json!([1, 1.5])], &mut out).is_err());
    }
}
