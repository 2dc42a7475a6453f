//! Scoring on a real held-out split (a small synthetic dataset written here): the ground truth
//! scores perfectly on every metric it can, and the baseline is the constant prediction it claims
//! to be, scoring what that constant scores by direct count.

use fourm_data::{DatasetStore, StoreConfig};
use fourm_eval::{EvalSet, Prediction, Sums, Task, baseline, score};
use fourm_synth::dataset::VAL_DIR;
use fourm_synth::{SynthConfig, write_synthetic};

const VAL: u64 = 12;

async fn split() -> (tempfile::TempDir, EvalSet) {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        samples: 12,
        shard_samples: 12,
        resolution: 32,
        patch: 8,
        codebook_size: 64,
        fit_samples: 24,
        kmeans_iterations: 4,
        val_samples: VAL,
        ..SynthConfig::default()
    };
    let store = DatasetStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    write_synthetic(&store, &config).await.unwrap();
    let set = EvalSet::load(&store.child(VAL_DIR), 100).await.unwrap();
    (dir, set)
}

fn task(s: &str) -> Task {
    s.parse().unwrap()
}

fn total(t: &Task, set: &EvalSet, predict: impl Fn(usize) -> Prediction) -> Sums {
    let mut sums = Sums::default();
    for (i, sample) in set.samples.iter().enumerate() {
        sums.add(&score(t, sample, &predict(i), set).unwrap());
    }
    sums
}

fn metric(sums: &Sums, t: &Task, name: &str) -> f64 {
    sums.metrics(t)
        .into_iter()
        .find(|m| m.0 == name)
        .unwrap_or_else(|| panic!("{t} has no metric {name}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_truth_scores_perfectly_and_the_baseline_is_a_constant() {
    let (_dir, set) = split().await;
    assert_eq!(
        set.samples.len() as u64,
        VAL,
        "every held-out sample is read"
    );

    // The true tokens, caption and boxes.
    for t in ["rgb->depth", "rgb->semseg", "rgb->normal", "caption->rgb"] {
        let t = task(t);
        let sums = total(&t, &set, |i| {
            Prediction::Tokens(set.samples[i].tokens[&t.target].clone())
        });
        assert_eq!(metric(&sums, &t, "token_accuracy"), 1.0, "{t}");
    }
    let t = task("rgb->caption");
    let sums = total(&t, &set, |i| {
        Prediction::Text(set.samples[i].caption.clone())
    });
    for m in [
        "exact_match",
        "attribute_accuracy",
        "shape_accuracy",
        "colour_accuracy",
    ] {
        assert_eq!(metric(&sums, &t, m), 1.0, "{m}");
    }
    let t = task("rgb->det");
    let sums = total(&t, &set, |i| Prediction::Text(set.samples[i].det_text()));
    assert_eq!(metric(&sums, &t, "ap50"), 1.0);

    // The caption baseline is the most frequent caption: its exact match is its share.
    let t = task("rgb->caption");
    let Prediction::Text(constant) = baseline(&t, &set).unwrap() else {
        panic!("a caption baseline is text")
    };
    let count = |c: &str| set.samples.iter().filter(|s| s.caption == c).count();
    assert!(
        set.samples
            .iter()
            .all(|s| count(&s.caption) <= count(&constant))
    );
    let sums = total(&t, &set, |_| Prediction::Text(constant.clone()));
    let share = count(&constant) as f64 / VAL as f64;
    assert!((metric(&sums, &t, "exact_match") - share).abs() < 1e-12);

    // The semseg baseline paints every pixel with the majority class: its pixel accuracy is that
    // class's share of the true pixels, and its mIoU is that share over the classes present.
    let t = task("rgb->semseg");
    let prediction = baseline(&t, &set).unwrap();
    let sums = total(&t, &set, |_| prediction.clone());
    let pixels: Vec<u8> = set
        .samples
        .iter()
        .flat_map(|s| s.raw["semseg"].data.iter().map(|v| v.round() as u8))
        .collect();
    let mut counts = [0usize; 256];
    for &p in &pixels {
        counts[p as usize] += 1;
    }
    let majority = counts.iter().max().copied().unwrap() as f64 / pixels.len() as f64;
    let present = counts.iter().filter(|&&n| n > 0).count() as f64;
    assert!(
        (metric(&sums, &t, "pixel_accuracy") - majority).abs() < 1e-9,
        "{} vs {majority}",
        metric(&sums, &t, "pixel_accuracy")
    );
    assert!((metric(&sums, &t, "miou") - majority / present).abs() < 1e-9);
}
