//! The synthetic dataset: modalities aligned (checked numerically against the scene geometry),
//! tokenizers that reconstruct what they encode, and a written dataset that is valid,
//! deterministic for a seed, and readable back (raw PNGs, tokens, preview).

use std::collections::BTreeMap;
use std::path::Path;

use fourm_data::{DatasetStore, ScanOptions, StoreConfig, read_index, read_tar, scan_dataset};
use fourm_synth::caption::visible_objects;
use fourm_synth::dataset::{IMAGE_MODALITIES, RAW_DIR, fit_tokenizers, plane, written_config};
use fourm_synth::render::{CLASS_BACKGROUND, CLASS_GROUND, DEPTH_FAR, View};
use fourm_synth::shape::{signed_distance, surface_normal};
use fourm_synth::vec3::Vec3;
use fourm_synth::{RawFormat, from_png};
use fourm_synth::{SynthConfig, generate_sample, preview_sample, write_synthetic};

fn small_config() -> SynthConfig {
    SynthConfig {
        samples: 24,
        shard_samples: 10,
        resolution: 32,
        seed: 7,
        patch: 4,
        codebook_size: 64,
        fit_samples: 16,
        kmeans_iterations: 6,
        ..SynthConfig::default()
    }
}

#[test]
fn modalities_are_aligned_with_the_scene_geometry() {
    let config = SynthConfig {
        resolution: 64,
        ..SynthConfig::default()
    };
    let (mut object_pixels, mut normal_agree, mut boundaries) = (0usize, 0usize, 0usize);
    for index in 0..30 {
        let s = generate_sample(&config, index);
        let f = &s.frame;
        let (w, h) = (f.width, f.height);
        let view = View::new(&s.scene, w, h);
        let eye = Vec3::new(
            s.scene.camera.eye[0],
            s.scene.camera.eye[1],
            s.scene.camera.eye[2],
        );
        for row in 0..h {
            for col in 0..w {
                let p = row * w + col;
                let dir = view.ray(row, col, w, h);
                let depth = f64::from(f.depth[p]);
                let point = eye + dir * (depth / dir.dot(view.forward));
                let normal = Vec3::new(
                    f64::from(f.normal[3 * p]),
                    f64::from(f.normal[3 * p + 1]),
                    f64::from(f.normal[3 * p + 2]),
                );
                let rgb = &f.rgb[3 * p..3 * p + 3];
                match f.instance[p] {
                    0 if f.semseg[p] == CLASS_BACKGROUND => {
                        assert_eq!(f.depth[p], DEPTH_FAR, "sky depth");
                        assert_eq!(normal.length(), 0.0, "sky normal");
                    }
                    0 => {
                        assert_eq!(f.semseg[p], CLASS_GROUND, "{index}: pixel {p}");
                        if f.depth[p] < DEPTH_FAR {
                            assert!(
                                point.y.abs() < 1e-3,
                                "{index}: ground depth off the plane: {point:?}"
                            );
                        }
                        assert!(
                            (normal.dot(view.to_camera(Vec3::new(0.0, 1.0, 0.0))) - 1.0).abs()
                                < 1e-4
                        );
                    }
                    id => {
                        let o = &s.scene.objects[usize::from(id) - 1];
                        object_pixels += 1;
                        assert_eq!(
                            f.semseg[p],
                            o.shape.class_id(),
                            "{index}: segmentation = shape"
                        );
                        // Depth puts the pixel on the object's surface.
                        let sd = signed_distance(o, point);
                        assert!(
                            sd.abs() < 2e-3 * depth,
                            "{index}: pixel {p} is {sd} off its {:?}",
                            o.shape
                        );
                        // Normals are the surface's normals (cube edges are ambiguous).
                        let expected = view.to_camera(surface_normal(o, point));
                        if normal.dot(expected) > 0.99 {
                            normal_agree += 1;
                        }
                        // RGB is the object's colour times one shade factor.
                        let base = o.rgb();
                        let ratios = [
                            f64::from(rgb[0]) / base.x,
                            f64::from(rgb[1]) / base.y,
                            f64::from(rgb[2]) / base.z,
                        ];
                        let spread = ratios
                            .iter()
                            .fold(0f64, |m, r| m.max((r - ratios[0]).abs()));
                        assert!(
                            spread < 1e-3,
                            "{index}: colour of pixel {p} is not its object's: {ratios:?}"
                        );
                    }
                }
                // Where the segmentation changes object, depth or normal changes too.
                for q in [(col + 1 < w).then(|| p + 1), (row + 1 < h).then(|| p + w)]
                    .into_iter()
                    .flatten()
                {
                    if f.instance[p] != f.instance[q] && (f.instance[p] > 0 || f.instance[q] > 0) {
                        boundaries += 1;
                        let dz = (f.depth[p] - f.depth[q]).abs();
                        let dn: f32 = (0..3)
                            .map(|c| f.normal[3 * p + c] * f.normal[3 * q + c])
                            .sum();
                        assert!(
                            dz > 1e-3 || dn < 0.999,
                            "{index}: boundary {p}/{q} without a depth or normal edge"
                        );
                    }
                }
            }
        }
        // Boxes are the tight boxes of the visible pixels of each object.
        let visible = visible_objects(f, s.scene.objects.len());
        assert_eq!(s.det.instances.len(), visible.len());
        for (v, det) in visible.iter().zip(&s.det.instances) {
            assert_eq!(det.class_name, s.scene.objects[v.object].shape.name());
            let px: Vec<usize> = (0..w * h)
                .filter(|&p| usize::from(f.instance[p]) == v.object + 1)
                .collect();
            let cols = px.iter().map(|p| p % w);
            let rows = px.iter().map(|p| p / w);
            let tight = [
                cols.clone().min().unwrap() as f64 / w as f64,
                rows.clone().min().unwrap() as f64 / h as f64,
                (cols.max().unwrap() + 1) as f64 / w as f64,
                (rows.max().unwrap() + 1) as f64 / h as f64,
            ];
            assert_eq!(det.boxes, tight, "{index}: box of object {}", v.object);
            let word = s.scene.objects[v.object].description();
            assert!(
                s.caption.contains(&word),
                "{index}: caption {:?} lacks {word}",
                s.caption
            );
        }
    }
    assert!(object_pixels > 10_000, "{object_pixels}");
    assert!(
        normal_agree * 100 > object_pixels * 98,
        "{normal_agree} of {object_pixels}"
    );
    assert!(boundaries > 1000, "{boundaries}");
}

#[test]
fn zoom_makes_the_objects_larger() {
    let object_pixels = |zoom: f64| -> usize {
        let mut config = SynthConfig {
            resolution: 64,
            ..SynthConfig::default()
        };
        config.scene.zoom = zoom;
        (0..20)
            .map(|index| {
                let f = generate_sample(&config, index).frame;
                f.instance.iter().filter(|&&i| i > 0).count()
            })
            .sum()
    };
    let (near, default) = (object_pixels(1.4), object_pixels(1.0));
    // Objects 1.4 times as large cover about twice the pixels (less what leaves the frame).
    assert!(
        near * 10 > default * 15,
        "zoom 1.4: {near} pixels, zoom 1: {default}"
    );
}

#[test]
fn tokenizers_reconstruct_unseen_samples() {
    let config = SynthConfig {
        samples: 200,
        fit_samples: 64,
        ..small_config()
    };
    let tokenizers = fit_tokenizers(&config).unwrap();
    let mut report = BTreeMap::new();
    for (tok, (raw, format)) in tokenizers.iter().zip(IMAGE_MODALITIES) {
        let (mut err, mut var, mut n, mut wrong) = (0f64, 0f64, 0usize, 0usize);
        for index in 100..130 {
            let x = plane(&generate_sample(&config, index).frame, format);
            let ids = tok.encode(&x).unwrap();
            assert_eq!(ids.len(), 64);
            assert!(ids.iter().all(|&i| (0..64).contains(&i)));
            let y = tok.decode(&ids).unwrap();
            let mean = x.data.iter().map(|v| f64::from(*v)).sum::<f64>() / x.data.len() as f64;
            for (a, b) in x.data.iter().zip(&y.data) {
                err += f64::from(a - b).powi(2);
                var += (f64::from(*a) - mean).powi(2);
                n += 1;
                wrong += usize::from(a != b);
            }
        }
        let (mse, explained) = (err / n as f64, 1.0 - err / var);
        report.insert(raw, (mse, explained, wrong as f64 / n as f64));
        match format {
            RawFormat::Classes => assert!(
                (wrong as f64) < 0.1 * n as f64,
                "{raw}: {wrong} of {n} pixels wrong"
            ),
            _ => assert!(
                explained > 0.8,
                "{raw}: decode(encode(x)) explains {explained:.3} of the variance"
            ),
        }
    }
    eprintln!("reconstruction (mse, explained variance, changed fraction): {report:?}");
}

fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_dataset_is_valid_deterministic_and_readable() {
    let config = small_config();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let open = |d: &tempfile::TempDir| {
        DatasetStore::open(d.path().to_str().unwrap(), StoreConfig::default()).unwrap()
    };
    let report = write_synthetic(&open(&dirs[0]), &config).await.unwrap();
    assert_eq!((report.samples, report.shards), (24, 3));
    write_synthetic(&open(&dirs[1]), &config).await.unwrap();
    let (a, b) = (files_under(dirs[0].path()), files_under(dirs[1].path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs between two runs with the same seed"
        );
    }
    assert!(
        a.contains_key("index.json")
            && a.contains_key("synth.json")
            && a.contains_key("text_tokenizer.json")
    );
    assert!(
        a.contains_key("raw/depth/shard-00002.tar")
            && a.contains_key("tokenizers/tok_rgb@32.safetensors")
    );
    let manifest = std::str::from_utf8(&a["synth.json"]).unwrap();
    assert_eq!(written_config(manifest).unwrap(), config);

    let store = open(&dirs[0]);
    let index = read_index(&store).await.unwrap();
    assert_eq!(index.samples(), 24);
    let names: Vec<&str> = index.modalities.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "caption",
            "det",
            "tok_depth@32",
            "tok_normal@32",
            "tok_rgb@32",
            "tok_semseg@32"
        ]
    );
    assert_eq!(index.modalities["tok_rgb@32"].vocab_size, Some(64));
    assert_eq!(index.modalities["tok_rgb@32"].token_shape, Some([8, 8]));
    let rescan = scan_dataset(
        &store,
        &ScanOptions {
            vocab_sizes: report.vocab_sizes.clone(),
            checksums: false,
        },
    )
    .await
    .unwrap();
    assert!(rescan.bad.is_empty() && rescan.index == index);

    // Raw PNGs hold the sample's frame (up to quantisation); a different seed differs.
    let s = generate_sample(&config, 13);
    for (name, format) in IMAGE_MODALITIES {
        let tar = bytes::Bytes::from(a[&format!("{RAW_DIR}/{name}/shard-00001.tar")].clone());
        let entries = read_tar("mem://raw", &tar).unwrap();
        let entry = entries.iter().find(|e| e.key == "00000013").unwrap();
        let back = from_png(&entry.data, format, name).unwrap();
        let original = plane(&s.frame, format);
        let tol = match format {
            RawFormat::Depth => 6e-4,
            RawFormat::Classes => 0.0,
            _ => 1.0 / 255.0 + 1e-6,
        };
        let worst = back
            .data
            .iter()
            .zip(&original.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{name}: {worst}");
    }
    let other = generate_sample(
        &SynthConfig {
            seed: 8,
            ..config.clone()
        },
        13,
    );
    assert_ne!(other.frame, s.frame);

    let preview = preview_sample(&store, "00000013").await.unwrap();
    assert_eq!(preview.shard, 1);
    assert_eq!(preview.caption, s.caption);
    assert_eq!(&preview.png[1..4], b"PNG");
    assert_eq!(
        fourm_masking::Detections::from_text(&preview.det_decoded, fourm_masking::COORD_BINS)
            .instances
            .len(),
        s.det.instances.len(),
        "boxes survive the text tokenizer: {}",
        preview.det_decoded
    );
    assert!(preview_sample(&store, "99999999").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_synth_configs_mask_the_written_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        samples: 12,
        shard_samples: 12,
        resolution: 64,
        patch: 8,
        codebook_size: 32,
        fit_samples: 12,
        kmeans_iterations: 4,
        ..SynthConfig::default()
    };
    let store = DatasetStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    write_synthetic(&store, &config).await.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("configs/masking-synth.toml")).unwrap();
    let masking: fourm_masking::MaskingConfig = toml::from_str(&text).unwrap();
    masking.validate().unwrap();
    let tokenizer =
        fourm_masking::TextTokenizer::load(&dir.path().join("text_tokenizer.json")).unwrap();
    let reader = fourm_data::ShardReader::open(store).await.unwrap();
    let index = reader.index().clone();
    let shard = reader.read_shard(0).await.unwrap();
    for file in [
        "synth_all2all_rgb2all_a0.5.yaml",
        "synth_all2all_rgb2all_a0.5.toml",
        "synth_all2all_rgb2all_rgb2caption.yaml",
        "synth_all2all_rgb2all_rgb2caption.toml",
    ] {
        let alphas =
            fourm_masking::AlphasConfig::load(&root.join("../masking/alphas").join(file)).unwrap();
        let masker = fourm_masking::Masker::new(
            masking.clone(),
            &alphas,
            tokenizer.sequence_tokens().clone(),
        )
        .unwrap();
        for i in 0..shard.len() {
            let sample = shard.decode(i, i as u64).unwrap();
            let input = fourm_masking::masking_input(&sample, &masking, Some(&tokenizer)).unwrap();
            let masked = masker.mask(&input, 1000 + i as u64).unwrap();
            let (mut inputs, mut targets) = (0, 0);
            for (name, m) in &masked.modalities {
                let vocab = index.modalities[name]
                    .vocab_size
                    .map_or(tokenizer.vocab_size(), |v| v as usize);
                assert!(
                    m.tensor
                        .tokens()
                        .iter()
                        .all(|&t| (0..vocab as i64).contains(&t)),
                    "{name}: ids in 0..{vocab}"
                );
                assert_eq!(m.len(), masker.tensor_len(name).unwrap());
                assert!(
                    m.input_mask
                        .iter()
                        .zip(&m.target_mask)
                        .all(|(a, b)| *a || *b)
                );
                inputs += m.num_inputs();
                targets += m.num_targets();
                if name == "caption" {
                    assert!(
                        !m.tensor.tokens().contains(&i64::from(tokenizer.unk())),
                        "captions have no [UNK]"
                    );
                }
            }
            assert!(inputs <= 64 && targets <= 64, "{inputs} / {targets}");
            if masked.component == 0 {
                assert_eq!(masked.budgets["tok_rgb@64"].input, 64, "rgb2all");
            }
        }
    }
}
