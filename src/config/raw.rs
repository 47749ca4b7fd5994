//! The configuration as stored: string maps in the original Go influx-proxy's Redis layout, or the same
//! structure as JSON (`config.py --json`, `--config FILE`, the on-disk cache).
//!
//! Nothing here is validated; `Config::build` turns a `RawConfig` into a checked snapshot. Keeping the raw
//! form lets the poller tell "nothing changed" with one comparison and lets the cache store exactly what
//! Redis said.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConfig {
    /// `default_node`: fields every node inherits.
    pub default_node: Fields,
    /// `n:<name>`
    pub nodes: BTreeMap<String, Fields>,
    /// `b:<name>`
    pub backends: BTreeMap<String, Fields>,
    /// `m:<measurement>`: backend names in list order.
    pub keymaps: BTreeMap<String, Vec<String>>,
}

impl RawConfig {
    /// `{"DEFAULT_NODE": {...}, "NODES": {...}, "BACKENDS": {...}, "KEYMAPS": {...}}`, the names of
    /// config.py's dicts. Numbers and booleans are accepted where Redis would hold their decimal string.
    pub fn from_json(text: &str) -> Result<RawConfig, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let top = value.as_object().ok_or("the top level must be an object")?;
        for key in top.keys() {
            if !matches!(key.as_str(), "DEFAULT_NODE" | "NODES" | "BACKENDS" | "KEYMAPS") {
                return Err(format!("unknown top-level key {key:?} (expected DEFAULT_NODE, NODES, BACKENDS, KEYMAPS)"));
            }
        }
        let empty = Map::new();
        let section = |name: &str| -> Result<&Map<String, Value>, String> {
            match top.get(name) {
                None => Ok(&empty),
                Some(v) => v.as_object().ok_or_else(|| format!("{name} must be an object")),
            }
        };
        let mut raw = RawConfig {
            default_node: fields_from_json("DEFAULT_NODE", &Value::Object(section("DEFAULT_NODE")?.clone()))?,
            ..RawConfig::default()
        };
        for (name, v) in section("NODES")? {
            raw.nodes.insert(name.clone(), fields_from_json(&format!("NODES.{name}"), v)?);
        }
        for (name, v) in section("BACKENDS")? {
            raw.backends.insert(name.clone(), fields_from_json(&format!("BACKENDS.{name}"), v)?);
        }
        for (name, v) in section("KEYMAPS")? {
            let list = v.as_array().ok_or_else(|| format!("KEYMAPS.{name} must be a list of backend names"))?;
            let names = list
                .iter()
                .map(|b| b.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("KEYMAPS.{name} must be a list of backend names"))?;
            raw.keymaps.insert(name.clone(), names);
        }
        Ok(raw)
    }

    pub fn to_json(&self) -> String {
        let fields = |f: &Fields| Value::Object(f.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
        let mut top = Map::new();
        top.insert("DEFAULT_NODE".into(), fields(&self.default_node));
        top.insert("NODES".into(), Value::Object(self.nodes.iter().map(|(k, f)| (k.clone(), fields(f))).collect()));
        top.insert(
            "BACKENDS".into(),
            Value::Object(self.backends.iter().map(|(k, f)| (k.clone(), fields(f))).collect()),
        );
        top.insert(
            "KEYMAPS".into(),
            Value::Object(
                self.keymaps
                    .iter()
                    .map(|(k, l)| (k.clone(), Value::Array(l.iter().cloned().map(Value::String).collect())))
                    .collect(),
            ),
        );
        serde_json::to_string_pretty(&Value::Object(top)).unwrap_or_default()
    }
}

fn fields_from_json(what: &str, v: &Value) -> Result<Fields, String> {
    let obj = v.as_object().ok_or_else(|| format!("{what} must be an object of fields"))?;
    obj.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => u8::from(*b).to_string(),
                _ => return Err(format!("{what}.{k} must be a string or a number")),
            };
            Ok((k.clone(), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let text = r#"{"DEFAULT_NODE": {"listenaddr": ":6666"},
            "NODES": {"l1": {"db": "test", "interval": 5}},
            "BACKENDS": {"local": {"url": "http://127.0.0.1:8086", "writeonly": 0, "zone": "a"}},
            "KEYMAPS": {"cpu": ["local"], "_default_": ["local"]}}"#;
        let raw = RawConfig::from_json(text).unwrap();
        assert_eq!(raw.nodes["l1"]["interval"], "5");
        assert_eq!(raw.backends["local"]["writeonly"], "0");
        assert_eq!(raw.keymaps["cpu"], vec!["local".to_string()]);
        assert_eq!(RawConfig::from_json(&raw.to_json()).unwrap(), raw);
    }

    #[test]
    fn json_errors_name_the_place() {
        assert!(RawConfig::from_json("[]").unwrap_err().contains("top level"));
        assert!(RawConfig::from_json(r#"{"KEYMAPS": {"cpu": "local"}}"#).unwrap_err().contains("KEYMAPS.cpu"));
        assert!(RawConfig::from_json(r#"{"BACKENDS": {"b": {"url": []}}}"#).unwrap_err().contains("BACKENDS.b.url"));
        assert!(RawConfig::from_json(r#"{"BACKEND": {}}"#).unwrap_err().contains("BACKEND"));
    }
}
