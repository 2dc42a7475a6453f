//! Generation on a small random model: the key/value cache against full decoder passes, chained
//! plans (determinism, completeness, ROAR schedules, stopping), guidance and bad requests.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use fourm_model::generate::{
    DecoderCache, EncodedContext, GenState, GenerationEvent, GenerationHook, GenerationPlan,
    Generator, Guidance, NoHook, Sampling, SelectionRequest, SpecialTokens, Stop, TargetPlan,
    TokenSchedule, TopK, unconditional,
};
use fourm_model::{FourM, FourMConfig, Modalities, ModalitySpec};

const GRID: [usize; 2] = [4, 4];

fn model() -> FourM {
    let mods = Modalities::new(vec![
        ModalitySpec::image_tokens("tok_depth", 32, GRID),
        ModalitySpec::image_tokens("tok_rgb", 48, GRID),
        ModalitySpec::sequence("caption", 300, 12),
    ])
    .unwrap();
    FourMConfig::debug()
        .init(&mods, 3, &Device::flex())
        .unwrap()
}

fn depth(batch: usize, seed: i64) -> Vec<i64> {
    (0..batch as i64 * 16)
        .map(|i| (i * 7 + seed) % 32)
        .collect()
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32], atol: f32) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= atol, "max |diff| {max:e} > {atol:e}");
}

/// `[1, 1, n, n]` bias: position `i` may attend to `0..=i`.
fn causal(n: usize, device: &Device) -> Tensor<4> {
    let v: Vec<f32> = (0..n * n)
        .map(|k| if k % n > k / n { -f32::MAX } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(v, [1, 1, n, n]), device)
}

/// Cached decoding (one row at a time, or a prefill then rows) gives the rows of a full causal
/// pass, against a padded context, and against an empty one.
#[test]
fn kv_cache_matches_full_decoder_passes() {
    let model = model();
    let device = Device::flex();
    let sp = SpecialTokens::ml4m_wordpiece();
    let padded = GenState::new(model.modalities(), 2)
        .unwrap()
        .with_tokens("tok_depth", depth(2, 1))
        .unwrap()
        .with_sequence("caption", &[vec![40, 41, 42, 43], vec![44]], &sp)
        .unwrap();
    let empty = GenState::new(model.modalities(), 2).unwrap();
    for state in [padded, empty] {
        let context = EncodedContext::encode(&model, &state).unwrap();
        let (b, n, d) = (2, 9, model.config().dim);
        let y = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
        let full = values(context.decode(&model, y.clone(), Some(causal(n, &device))));

        let mut cache = DecoderCache::new(&model, &context);
        let rows: Vec<f32> = (0..n)
            .map(|i| values(cache.forward(&model, y.clone().narrow(1, i, 1))))
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(cache.len(), n);
        // rows came out position-major: [n][b][d] -> [b][n][d]
        let rows: Vec<f32> = (0..b)
            .flat_map(|bi| (0..n).flat_map(move |i| (i * b + bi) * d..(i * b + bi + 1) * d))
            .map(|k| rows[k])
            .collect();
        assert_close(&rows, &full, 2e-5);

        let mut cache = DecoderCache::new(&model, &context);
        let head = values(cache.forward(&model, y.clone().narrow(1, 0, 5)));
        let tail = values(cache.forward(&model, y.clone().narrow(1, 5, n - 5)));
        let joined: Vec<f32> = (0..b)
            .flat_map(|bi| {
                head[bi * 5 * d..(bi + 1) * 5 * d]
                    .iter()
                    .chain(&tail[bi * (n - 5) * d..(bi + 1) * (n - 5) * d])
            })
            .copied()
            .collect();
        assert_close(&joined, &full, 2e-5);
    }
}

fn chain(seed: u64, kv_cache: bool, temperature: f64) -> GenerationPlan {
    let sampling = Sampling {
        temperature,
        top_k: TopK::Off,
        top_p: 0.9,
    };
    GenerationPlan {
        kv_cache,
        ..GenerationPlan::new(vec![
            TargetPlan::maskgit("tok_rgb", 4).with_sampling(sampling),
            TargetPlan::autoregressive("caption")
                .with_sampling(sampling)
                .with_tokens(10),
        ])
        .with_seed(seed)
    }
}

fn run(plan: &GenerationPlan, hook: &mut dyn GenerationHook) -> GenState {
    let model = model();
    let sp = SpecialTokens::ml4m_wordpiece();
    let state = GenState::new(model.modalities(), 2)
        .unwrap()
        .with_tokens("tok_depth", depth(2, 0))
        .unwrap();
    Generator::new(&model, &sp)
        .generate(state, plan, hook)
        .unwrap()
}

#[test]
fn chains_are_complete_and_deterministic_for_a_seed() {
    let a = run(&chain(7, true, 1.0), &mut NoHook);
    let b = run(&chain(7, true, 1.0), &mut NoHook);
    let c = run(&chain(8, true, 1.0), &mut NoHook);
    assert_eq!(a, b);
    assert_ne!(a.tokens("tok_rgb"), c.tokens("tok_rgb"));
    let rgb = a.get("tok_rgb").unwrap();
    assert!(rgb.input_mask.iter().all(|&m| !m) && rgb.target_mask.iter().all(|&m| m));
    assert!(rgb.ids().iter().all(|&t| (0..48).contains(&t)));
    let caption = a.get("caption").unwrap();
    assert!(caption.target_mask.iter().all(|&m| m));
    for row in a.sequences("caption").unwrap() {
        // at most the 9 decoded slots, with the sentinels merged away
        assert!(row.len() <= 9, "{row:?}");
        assert!(row.iter().all(|&t| (0..300).contains(&t)));
    }
}

#[derive(Default)]
struct Recorder {
    parallel: Vec<(usize, Vec<Vec<usize>>, Vec<f32>)>,
    tokens: Vec<Vec<f32>>,
    last: Vec<Vec<i64>>,
}

impl GenerationHook for Recorder {
    fn on_event(&mut self, event: &GenerationEvent<'_>) {
        match event {
            GenerationEvent::Parallel(p) => {
                self.parallel
                    .push((p.step, p.selected.to_vec(), p.logits.to_vec()))
            }
            GenerationEvent::Token(t) => {
                self.tokens.push(t.logits.to_vec());
                self.last = t.sequences.to_vec();
            }
            _ => {}
        }
    }
}

#[test]
fn cached_and_uncached_chains_agree() {
    let (mut with, mut without) = (Recorder::default(), Recorder::default());
    let a = run(&chain(1, true, 0.0), &mut with);
    let b = run(&chain(1, false, 0.0), &mut without);
    assert_eq!(a, b);
    assert_eq!(with.tokens.len(), without.tokens.len());
    assert_eq!(with.tokens.len(), 9);
    for (x, y) in with.tokens.iter().zip(&without.tokens) {
        assert_close(x, y, 2e-5);
    }
}

#[test]
fn roar_commits_its_schedule_and_stops_at_the_stop_token() {
    let mut rec = Recorder::default();
    let plan = GenerationPlan::new(vec![
        TargetPlan::roar("tok_rgb", 3).with_sampling(Sampling::with_temperature(1.0)),
    ]);
    let out = run(&plan, &mut rec);
    let counts: Vec<usize> = rec.parallel.iter().map(|(_, s, _)| s[0].len()).collect();
    assert_eq!(counts, TokenSchedule::Linear.tokens(3, 16).unwrap());
    assert_eq!(
        rec.parallel.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut all: Vec<usize> = rec
        .parallel
        .iter()
        .flat_map(|(_, s, _)| s[1].clone())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..16).collect::<Vec<_>>());
    assert!(out.get("tok_rgb").unwrap().target_mask.iter().all(|&m| m));

    // Greedy caption without stopping, then stopping at the second decoded token of sample 0.
    let caption = |stop| {
        let mut rec = Recorder::default();
        let mut t = TargetPlan::autoregressive("caption").with_tokens(8);
        t.method = fourm_model::generate::Method::Autoregressive { stop };
        run(&GenerationPlan::new(vec![t]), &mut rec);
        rec
    };
    let never = caption(Stop::Never);
    assert_eq!(never.tokens.len(), 7);
    let stop_at = never.last[0][2];
    let stopped = caption(Stop::Token(stop_at));
    // iterations until every sample holds the token (the start token counts, as in ml-4m)
    let expected = never
        .last
        .iter()
        .map(|r| r.iter().position(|&t| t == stop_at))
        .try_fold(0, |acc, p| p.map(|p| acc.max(p)))
        .unwrap_or(7);
    assert!(
        expected > 0 && expected < 7,
        "the stop token must end decoding early"
    );
    assert_eq!(stopped.tokens.len(), expected);
}

#[test]
fn guidance_extrapolates_from_the_unconditional_pass() {
    let model = model();
    let sp = SpecialTokens::ml4m_wordpiece();
    let state = GenState::new(model.modalities(), 1)
        .unwrap()
        .with_tokens("tok_depth", depth(1, 3))
        .unwrap()
        .with_sequence("caption", &[vec![50, 51, 52]], &sp)
        .unwrap();
    let first_logits = |state: &GenState, scale: f64| {
        let mut rec = Recorder::default();
        let plan = GenerationPlan::new(vec![
            TargetPlan::maskgit("tok_rgb", 2).with_guidance(Guidance::constant(scale)),
        ]);
        Generator::new(&model, &sp)
            .generate(state.clone(), &plan, &mut rec)
            .unwrap();
        rec.parallel.remove(0).2
    };
    let cond = first_logits(&state, 1.0);
    let conditions = vec!["caption".to_string(), "tok_depth".to_string()];
    let uncond = first_logits(&unconditional(&state, &conditions, &sp).unwrap(), 1.0);
    let guided = first_logits(&state, 3.0);
    let want: Vec<f32> = cond
        .iter()
        .zip(&uncond)
        .map(|(c, u)| u + (c - u) * 3.0)
        .collect();
    assert_close(&guided, &want, 1e-5);
    assert!(cond.iter().zip(&uncond).any(|(c, u)| (c - u).abs() > 1e-3));
}

struct BadSelection;

impl GenerationHook for BadSelection {
    fn select(&mut self, r: &SelectionRequest<'_>) -> Option<Vec<Vec<usize>>> {
        Some(vec![vec![r.candidates[0][0]]; r.candidates.len() + 1])
    }
}

#[test]
fn bad_requests_are_errors() {
    let model = model();
    let sp = SpecialTokens::ml4m_wordpiece();
    let generator = Generator::new(&model, &sp);
    let state = || {
        GenState::new(model.modalities(), 1)
            .unwrap()
            .with_tokens("tok_depth", depth(1, 0))
            .unwrap()
    };
    let plan = |t| GenerationPlan::new(vec![t]);
    let errors = [
        generator.generate(
            state(),
            &plan(TargetPlan::maskgit("tok_normal", 2)),
            &mut NoHook,
        ),
        generator.generate(
            state(),
            &plan(TargetPlan::autoregressive("tok_rgb")),
            &mut NoHook,
        ),
        generator.generate(
            state(),
            &plan(TargetPlan::maskgit("tok_depth", 2)),
            &mut NoHook,
        ),
        generator.generate(
            state(),
            &plan(TargetPlan::maskgit("tok_rgb", 2).with_tokens(17)),
            &mut NoHook,
        ),
        generator.generate(
            state(),
            &plan(TargetPlan::maskgit("tok_rgb", 2)),
            &mut BadSelection,
        ),
        generator.generate(
            GenState::new(&Modalities::perf(), 1).unwrap(),
            &plan(TargetPlan::maskgit("tok_rgb", 2)),
            &mut NoHook,
        ),
    ];
    for e in errors {
        let err = e.expect_err("request must be refused");
        assert!(
            matches!(err, fourm_model::ModelError::Generation { .. }),
            "{err}"
        );
    }
}
