//! One modality's tar of a shard: its entries `<key>.<ext>` in archive order, read without copying
//! (every entry is a slice of the downloaded archive), and written deterministically.

use bytes::Bytes;

use crate::error::DataError;
use crate::layout::split_entry_name;

/// A file in a shard's tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Full entry name, e.g. `000123.npy`.
    pub name: String,
    /// WebDataset key (`000123`).
    pub key: String,
    /// Extension after the key's dot (`npy`).
    pub ext: String,
    /// File contents.
    pub data: Bytes,
}

/// Reads the regular-file entries of a tar archive, in archive order. Directories are skipped;
/// links and other special entries, names without an extension, and a key that appears twice are
/// errors naming `url` and the entry.
pub fn read_tar(url: &str, archive: &Bytes) -> Result<Vec<TarEntry>, DataError> {
    let mut out: Vec<TarEntry> = Vec::new();
    let tar_error = |after: &[TarEntry], source| DataError::Tar {
        url: url.to_string(),
        after: after.last().map(|e| e.name.clone()),
        source,
    };
    let mut tar = tar::Archive::new(&archive[..]);
    let entries = tar.entries().map_err(|e| tar_error(&out, e))?;
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| tar_error(&out, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |reason: &str| DataError::BadEntry {
            url: url.to_string(),
            entry: name.clone(),
            reason: reason.to_string(),
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            other => return Err(bad(&format!("unsupported entry type {other:?}"))),
        }
        let start = entry.raw_file_position() as usize;
        let len = entry.size() as usize;
        let end = start.checked_add(len).filter(|&end| end <= archive.len());
        let Some(end) = end else {
            let source = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("entry {name} needs {len} bytes at offset {start}"),
            );
            return Err(tar_error(&out, source));
        };
        let (key, ext) = split_entry_name(&name).ok_or_else(|| bad("name is not <key>.<ext>"))?;
        if !seen.insert(key.to_string()) {
            return Err(bad(&format!("key {key:?} appears twice")));
        }
        out.push(TarEntry {
            key: key.to_string(),
            ext: ext.to_string(),
            data: archive.slice(start..end),
            name,
        });
    }
    Ok(out)
}

/// Writes a tar archive of `(name, contents)` files in the given order, with fixed metadata
/// (mode 0644, mtime 0, no owner) so the same files always give the same bytes.
pub fn write_tar<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data)
            .expect("writing a tar into memory cannot fail");
    }
    builder
        .into_inner()
        .expect("finishing a tar in memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let long = format!("{}.txt", "k".repeat(150));
        let files: Vec<(&str, &[u8])> = vec![
            ("000001.npy", b"\x93NUMPY..."),
            ("000002.npy", b""),
            (long.as_str(), b"a long name"),
        ];
        let archive = Bytes::from(write_tar(files.clone()));
        assert_eq!(write_tar(files.clone()), archive.to_vec(), "deterministic");
        let entries = read_tar("mem://t", &archive).unwrap();
        assert_eq!(entries.len(), 3);
        for (e, (name, data)) in entries.iter().zip(&files) {
            assert_eq!(e.name, *name);
            assert_eq!(&e.data[..], *data);
        }
        assert_eq!(
            (entries[0].key.as_str(), entries[0].ext.as_str()),
            ("000001", "npy")
        );
    }

    #[test]
    fn truncation_and_duplicates_are_errors() {
        let archive = write_tar([("a.npy", &[7u8; 2000][..]), ("b.npy", &[1u8; 10][..])]);
        let cut = Bytes::copy_from_slice(&archive[..1500]);
        let err = read_tar("mem://t", &cut).unwrap_err();
        assert!(matches!(err, DataError::Tar { .. }), "{err}");
        let dup = Bytes::from(write_tar([("a.npy", &b"1"[..]), ("a.txt", &b"2"[..])]));
        let err = read_tar("mem://t", &dup).unwrap_err();
        assert!(
            matches!(&err, DataError::BadEntry { entry, .. } if entry == "a.txt"),
            "{err}"
        );
    }
}
