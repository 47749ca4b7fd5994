//! Where a backend's logs live on disk, and the metadata file kept next to them.
//!
//! Every backend gets one directory under `<data dir>/backends/`, named after the backend (made
//! file-safe) plus a hash of its exact name and url, so a changed url is a new backend and two names
//! that sanitize alike never share a directory. The directory holds `backend.meta` (the backend's name
//! and fields, owner-readable only because the fields may hold a password) so that a restart can still
//! deliver a backlog whose backend has left the config, and one `w<N>` log directory per worker.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::Fields;

/// Directory of a backend's logs: its name made file-safe, plus a hash of the exact name and url (a
/// changed url is a new backend; `a b` and `a_b` must not share a directory).
pub fn backend_dir(data_dir: &Path, name: &str, url: &str) -> PathBuf {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let identity = format!("{name}\n{url}");
    data_dir.join("backends").join(format!("{safe}@{:016x}", fnv1a(identity.as_bytes())))
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub(super) const META_FILE: &str = "backend.meta";

/// Writes a backend's name and fields next to its logs (JSON, readable by the owner only: the fields
/// may hold a password), so a restart can deliver them even if the backend has left the config.
pub(super) fn write_meta(dir: &Path, name: &str, fields: &Fields) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::json!({ "name": name, "fields": fields }).to_string();
    let path = dir.join(META_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    crate::config::source::write_private(&path, text.as_bytes())
}

/// (name, fields) of every backend directory under `data_dir`.
pub fn stored_backends(data_dir: &Path) -> Vec<(String, Fields)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("backends")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join(META_FILE)) else { continue };
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let name = meta.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let fields: Option<Fields> = meta
            .get("fields")
            .and_then(|f| f.as_object())
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect());
        if let (Some(name), Some(fields)) = (name, fields) {
            found.push((name, fields));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_metadata_round_trips_and_names_do_not_collide() {
        let data = std::env::temp_dir().join(format!("ifxp-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let fields: Fields = [("url", "http://a:1"), ("password", "pw")].map(|(k, v)| (k.into(), v.into())).into();
        let (one, two) = (backend_dir(&data, "a b", "http://a:1"), backend_dir(&data, "a_b", "http://a:1"));
        assert_ne!(one, two, "names that sanitize alike keep their own directories");
        write_meta(&one, "a b", &fields).unwrap();
        assert_eq!(stored_backends(&data), vec![("a b".to_string(), fields)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(one.join(META_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file may hold a password: owner only");
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn backend_dirs_are_safe_names() {
        let d = backend_dir(Path::new("/d"), "../we ird", "http://a:1");
        let name = d.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".._we_ird@"), "{name}");
        assert_ne!(backend_dir(Path::new("/d"), "b", "http://a:1"), backend_dir(Path::new("/d"), "b", "http://a:2"));
    }
}
