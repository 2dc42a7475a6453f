//! A dataset laid out the way ml-4m's pre-tokenizer and WebDataset's writer leave it: PAX tars,
//! keys like `000123`, `.npy` files in numpy's own format (written here byte by byte from numpy's
//! format rules, not with this crate's encoder), int16 tokens of shape `(n_crops, 196)`, int64
//! `crop_settings`, aligned caption lists in `.json`, `det` boxes. fourm reads it unchanged.

use std::collections::BTreeMap;

use fourm_data::{
    DatasetStore, ModalityData, ModalityKind, ScanOptions, ShardReader, StoreConfig, npy,
    scan_dataset, write_index,
};

/// `np.save(f, a)` for a C-order array of dtype `descr`, following numpy's format
/// specification: magic, version 1.0, little-endian u16 header length, the header dict padded
/// with spaces and ended by a newline so that the data starts at a multiple of 64 bytes.
fn np_save(descr: &str, shape: &[usize], raw_le_values: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    while (6 + 2 + 2 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = vec![0x93, b'N', b'U', b'M', b'P', b'Y', 1, 0];
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(raw_le_values);
    out
}

/// A PAX tar as Python's `tarfile` writes it, with an extended header before the first file.
fn pax_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, (name, data)) in files.iter().enumerate() {
        if i == 0 {
            let record = |k: &str, v: &str| {
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                while format!("{len}{body}").len() != len {
                    len += 1;
                }
                format!("{len}{body}")
            };
            let pax = record("mtime", "1700000000.25") + &record("uname", "ml4m");
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("./PaxHeaders/{name}")).unwrap();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(pax.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, pax.as_bytes()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn tokens(key: u32, crop: u32, i: u32) -> i16 {
    ((key * 7919 + crop * 104_729 + i * 31) % 16_384) as i16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_an_ml4m_shard_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [123u32, 124, 125];
    let crops = 3u32;
    let mut files: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for &k in &keys {
        let key = format!("{k:06}");
        let mut raw = Vec::new();
        for c in 0..crops {
            for i in 0..196 {
                raw.extend_from_slice(&tokens(k, c, i).to_le_bytes());
            }
        }
        let npy_file = np_save("<i2", &[crops as usize, 196], &raw);
        // This crate's writer produces the same bytes as numpy's rules.
        let values: Vec<i64> = raw
            .chunks(2)
            .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        assert_eq!(
            npy::encode(npy::Dtype::I16, &[3, 196], &values).unwrap(),
            npy_file
        );
        files
            .entry("tok_rgb@224")
            .or_default()
            .push((format!("{key}.npy"), npy_file));
        let mut settings = Vec::new();
        for c in 0..crops as i64 {
            for v in [c * 10, c * 20, 224 - c * 30, 224 - c * 30, c % 2] {
                settings.extend_from_slice(&v.to_le_bytes());
            }
        }
        files
            .entry("crop_settings")
            .or_default()
            .push((format!("{key}.npy"), np_save("<i8", &[3, 5], &settings)));
        let captions: Vec<serde_json::Value> = (0..crops)
            .map(|c| serde_json::json!({"caption": format!("sample {k} crop {c}")}))
            .collect();
        files.entry("caption").or_default().push((
            format!("{key}.json"),
            serde_json::to_vec(&captions).unwrap(),
        ));
        let det = serde_json::json!({"instances": [
            {"boxes": [0.1, 0.1, 0.4, 0.5], "class_name": "cat", "score": 0.8}
        ]});
        files
            .entry("det")
            .or_default()
            .push((format!("{key}.json"), serde_json::to_vec(&det).unwrap()));
    }
    for (modality, entries) in &files {
        let d = dir.path().join(modality);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("shard-00000.tar"), pax_tar(entries)).unwrap();
    }

    let store = DatasetStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    let outcome = scan_dataset(&store, &ScanOptions::default()).await.unwrap();
    assert!(outcome.bad.is_empty(), "{:?}", outcome.bad);
    let index = outcome.index;
    let rgb = &index.modalities["tok_rgb@224"];
    assert_eq!(rgb.kind, ModalityKind::Tokens);
    assert_eq!(
        rgb.vocab_size,
        Some(16_384),
        "ml-4m's vocabulary for tok_rgb"
    );
    assert_eq!(rgb.token_shape, Some([14, 14]));
    assert_eq!(
        index.modalities["crop_settings"].kind,
        ModalityKind::CropSettings
    );
    assert_eq!(index.modalities["caption"].extension, "json");
    assert_eq!(index.shards[0].samples, 3);
    write_index(&store, &index).await.unwrap();

    let data = ShardReader::open(store)
        .await
        .unwrap()
        .read_shard(0)
        .await
        .unwrap();
    assert_eq!(data.keys(), ["000123", "000124", "000125"]);
    let mut crops_drawn = std::collections::BTreeSet::new();
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(data.crops(i), crops);
        for c in 0..crops {
            let s = data.decode_crop(i, c).unwrap();
            let ModalityData::Tokens(grid) = &s.modalities["tok_rgb@224"] else {
                panic!("tokens expected");
            };
            assert_eq!((grid.height, grid.width), (14, 14));
            let want: Vec<i64> = (0..196).map(|t| i64::from(tokens(k, c, t))).collect();
            assert_eq!(grid.ids, want);
            let c = i64::from(c);
            assert_eq!(
                s.crop_settings,
                Some([c * 10, c * 20, 224 - c * 30, 224 - c * 30, c % 2])
            );
            assert_eq!(
                s.modalities["caption"],
                ModalityData::Text(format!("sample {k} crop {c}"))
            );
            assert!(
                matches!(&s.modalities["det"], ModalityData::Json(v) if v["instances"][0]["class_name"] == "cat")
            );
        }
        // The crop drawn from a seed is one of the sample's crops, the same for every modality.
        for seed in 0..40 {
            let s = data.decode(i, seed).unwrap();
            assert!(s.crop < crops);
            assert_eq!(s, data.decode_crop(i, s.crop).unwrap());
            assert_eq!(s, data.decode(i, seed).unwrap(), "deterministic");
            crops_drawn.insert(s.crop);
        }
    }
    assert_eq!(crops_drawn.len(), crops as usize, "every crop gets drawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vocabulary_needs_to_be_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("tok_mystery@224");
    std::fs::create_dir_all(&d).unwrap();
    let raw: Vec<u8> = (0..16i16).flat_map(|v| v.to_le_bytes()).collect();
    let tar = pax_tar(&[("000001.npy".into(), np_save("<i2", &[1, 16], &raw))]);
    std::fs::write(d.join("shard-00000.tar"), tar).unwrap();
    let store = DatasetStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    let err = scan_dataset(&store, &ScanOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("--vocab tok_mystery@224=N"),
        "{err}"
    );
    let options = ScanOptions {
        vocab_sizes: BTreeMap::from([("tok_mystery@224".to_string(), 10)]),
        ..ScanOptions::default()
    };
    // Ids 10..16 are outside a vocabulary of 10: the only shard is bad.
    let outcome = scan_dataset(&store, &options).await.unwrap();
    assert_eq!(outcome.bad.len(), 1);
    assert!(
        outcome.bad[0].1.to_string().contains("token id 10"),
        "{}",
        outcome.bad[0].1
    );
    let options = ScanOptions {
        vocab_sizes: BTreeMap::from([("tok_mystery@224".to_string(), 16)]),
        ..ScanOptions::default()
    };
    let outcome = scan_dataset(&store, &options).await.unwrap();
    assert!(outcome.bad.is_empty());
    assert_eq!(
        outcome.index.modalities["tok_mystery@224"].token_shape,
        Some([4, 4])
    );
}
