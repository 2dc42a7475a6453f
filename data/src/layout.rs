//! Where things live in a dataset: `<root>/<modality>/shard-NNNNN.tar` holding entries
//! `<key>.<ext>`, and `<root>/index.json`.

use object_store::path::Path;

/// File name of the dataset index under the root.
pub const INDEX_FILE: &str = "index.json";

/// Name of the modality that holds ml-4m's per-sample crop parameters.
pub const CROP_SETTINGS: &str = "crop_settings";

/// Object path of the tar of `modality` for `shard` under `root`.
pub fn shard_path(root: &Path, modality: &str, shard: u32) -> Path {
    root.clone()
        .join(modality)
        .join(format!("shard-{shard:05}.tar"))
}

/// Object path of `index.json` under `root`.
pub fn index_path(root: &Path) -> Path {
    root.clone().join(INDEX_FILE)
}

/// The shard number of a file name `shard-NNNNN.tar` (any number of digits).
pub fn parse_shard_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("shard-")?.strip_suffix(".tar")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Splits a tar entry name into WebDataset's key and extension: the key is everything up to the
/// first dot of the last path component, the extension everything after it
/// (`000123.npy` → (`000123`, `npy`), `a/b.json.gz` → (`a/b`, `json.gz`)).
pub fn split_entry_name(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = base_start + name[base_start..].find('.')?;
    let (key, ext) = (&name[..dot], &name[dot + 1..]);
    (!key.is_empty() && !ext.is_empty() && key.len() > base_start).then_some((key, ext))
}

/// The URL of an object, for messages: the dataset URL joined with the path under the root.
pub fn object_url(root_url: &str, root: &Path, path: &Path) -> String {
    let rel = path
        .prefix_match(root)
        .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
        .unwrap_or_default();
    format!("{}/{}", root_url.trim_end_matches('/'), rel.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let root = Path::from("data/set");
        assert_eq!(
            shard_path(&root, "tok_rgb@224", 7).as_ref(),
            "data/set/tok_rgb@224/shard-00007.tar"
        );
        assert_eq!(parse_shard_name("shard-00007.tar"), Some(7));
        assert_eq!(parse_shard_name("shard-123456.tar"), Some(123_456));
        assert_eq!(parse_shard_name("shard-.tar"), None);
        assert_eq!(parse_shard_name("shard-00007.tar.tmp"), None);
        assert_eq!(split_entry_name("000123.npy"), Some(("000123", "npy")));
        assert_eq!(
            split_entry_name("x/y.z/a.json.gz"),
            Some(("x/y.z/a", "json.gz"))
        );
        assert_eq!(split_entry_name("noext"), None);
        assert_eq!(split_entry_name(".npy"), None);
        assert_eq!(split_entry_name("dir/.npy"), None);
        let path = shard_path(&root, "caption", 0);
        assert_eq!(
            object_url("s3://b/data/set/", &root, &path),
            "s3://b/data/set/caption/shard-00000.tar"
        );
    }
}
