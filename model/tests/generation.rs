//! A chained ml-4m generation run replayed from a fixture (vendored in `tests/fixtures/generation-a`, or
//! the folder named by `FOURM_GENERATION_FIXTURE`). The plan is built from the fixture's
//! `schedule_builder` arguments; every MaskGIT step's candidate positions, logits (atol 1e-5,
//! rtol 1e-4), argmax and resulting tensors, the autoregressive logits and output and the final
//! tokens are compared. The positions each MaskGIT step commits are replayed from the fixture:
//! at temperature 0 all confidences tie and ml-4m's choice is `torch.topk`'s tie-breaking. Run
//! with and without the key/value cache. Every entry the fixture's config describes is checked;
//! an entry this test does not know fails it.

mod fixture;

use std::collections::BTreeSet;

use burn::tensor::Device;
use fixture::{Report, Tensors, fixture_dir, generation_state, load_model};
use fourm_model::generate::{
    GenerationEvent, GenerationHook, GenerationPlan, Generator, Guidance, GuidanceSchedule, Method,
    ParallelMethod, Sampling, SelectionRequest, SpecialTokens, Stop, TargetPlan,
    TemperatureSchedule, TokenSchedule, TopK, argmax,
};
use serde_json::Value;

const LOGITS: (f64, f64) = (1e-5, 1e-4);

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|n| n.as_f64().expect("number"))
        .collect()
}

/// `name=value` in ml-4m's sampler call as the fixture records it (0 when absent).
fn sampler_arg(config: &Value, name: &str) -> f64 {
    let call = config["sampler"].as_str().unwrap_or_default();
    call.split([',', '(', ')'])
        .filter_map(|part| part.trim().strip_prefix(&format!("{name}=")))
        .map(|v| v.parse().expect("numeric sampler argument"))
        .next()
        .unwrap_or(0.0)
}

/// ml-4m's `build_chained_generation_schedules` arguments as a fourm plan.
fn plan(config: &Value, kv_cache: bool) -> GenerationPlan {
    let sb = &config["schedule_builder"];
    let targets = strings(&sb["target_domains"]);
    let schemes = strings(&sb["autoregression_schemes"]);
    let tokens = numbers(&sb["tokens_per_target"]);
    let steps = numbers(&sb["decoding_steps"]);
    let token_schedules = strings(&sb["token_decoding_schedules"]);
    let temps = numbers(&sb["temps"]);
    let temp_schedules = strings(&sb["temp_schedules"]);
    let cfg_scales = numbers(&sb["cfg_scales"]);
    let cfg_schedules = strings(&sb["cfg_schedules"]);
    let top_k = sampler_arg(config, "top_k");
    let top_p = sampler_arg(config, "top_p");
    let sampling = |t: f64| Sampling {
        temperature: t,
        top_k: match top_k {
            0.0 => TopK::Off,
            k if k >= 1.0 => TopK::Count(k as usize),
            k => TopK::Fraction(k),
        },
        top_p,
    };
    let targets = (0..targets.len())
        .map(|i| {
            let method = match schemes[i].as_str() {
                "maskgit" => Method::MaskGit {
                    steps: steps[i] as usize,
                    schedule: match token_schedules[i].as_str() {
                        "cosine" => TokenSchedule::Cosine,
                        "linear" => TokenSchedule::Linear,
                        other => panic!("token schedule {other}"),
                    },
                },
                "roar" => Method::Roar {
                    steps: steps[i] as usize,
                },
                "autoregressive" => Method::Autoregressive {
                    stop: Stop::FinalSentinel,
                },
                other => panic!("scheme {other}"),
            };
            let temperature_schedule = match temp_schedules[i].as_str() {
                "constant" => TemperatureSchedule::Constant,
                "linear" => TemperatureSchedule::Linear,
                onex => {
                    let p: Vec<f64> = onex
                        .strip_prefix("onex:")
                        .unwrap_or_else(|| panic!("temperature schedule {onex}"))
                        .split(':')
                        .map(|v| v.parse().unwrap())
                        .collect();
                    TemperatureSchedule::OneX {
                        min_t: p[0],
                        power: p[1],
                    }
                }
            };
            assert_eq!(
                cfg_schedules[i], "constant",
                "ml-4m implements only constant"
            );
            TargetPlan {
                modality: targets[i].clone(),
                method,
                tokens: Some(tokens[i] as usize),
                sampling: sampling(temps[i]),
                temperature_schedule,
                guidance: Guidance {
                    scale: cfg_scales[i],
                    schedule: GuidanceSchedule::Constant,
                },
            }
        })
        .collect();
    GenerationPlan {
        targets,
        guidance_conditions: Some(strings(&sb["cond_domains"])),
        grow_conditioning: sb["cfg_grow_conditioning"].as_bool().unwrap_or(false),
        seed: config["seed"].as_u64().unwrap_or(0),
        kv_cache,
    }
}

/// The text tokenizer's special ids from the fixture's config.
fn specials(config: &Value) -> SpecialTokens {
    let t = &config["text_tokenizer"];
    let map = t["sentinel_to_id"].as_object().expect("sentinel_to_id");
    let mut pairs: Vec<(usize, i64)> = map
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_i64().unwrap()))
        .collect();
    pairs.sort_unstable();
    assert!(pairs.iter().enumerate().all(|(i, (k, _))| i == *k));
    SpecialTokens {
        pad: t["pad_id"].as_i64().expect("pad_id"),
        eos: t["eos_id"].as_i64().expect("eos_id"),
        sentinels: pairs.into_iter().map(|(_, id)| id).collect(),
    }
}

/// Replays the fixture's committed positions and checks every step as it happens.
struct Replay<'a> {
    expected: &'a Tensors,
    schedule: &'a [Value],
    report: Report,
    checked: BTreeSet<String>,
    steps: BTreeSet<usize>,
    /// Per iteration, `[b, vocab]` logits of the autoregressive target.
    ar_logits: Vec<Vec<f32>>,
    ar_out: Vec<Vec<i64>>,
}

impl Replay<'_> {
    fn ints(&mut self, key: &str, actual: &[i64]) {
        self.checked.insert(key.to_string());
        let e = self.expected.ints(key);
        self.report.equal(key, actual, &e);
    }
}

impl GenerationHook for Replay<'_> {
    fn select(&mut self, r: &SelectionRequest<'_>) -> Option<Vec<Vec<usize>>> {
        let key = format!("maskgit.step{}.selected_pos", r.step);
        let per = self.expected.shape(&key)[1];
        let rows = self.expected.ints(&key);
        Some(
            rows.chunks(per)
                .map(|c| c.iter().map(|&p| p as usize).collect())
                .collect(),
        )
    }

    fn on_event(&mut self, event: &GenerationEvent<'_>) {
        match event {
            GenerationEvent::Parallel(p) => {
                let k = p.step;
                self.steps.insert(k);
                let entry = &self.schedule[k];
                assert_eq!(p.method, ParallelMethod::MaskGit);
                assert_eq!(entry["scheme"], "maskgit");
                assert_eq!(entry["target_domain"].as_str(), Some(p.modality));
                assert_eq!(entry["temperature"].as_f64(), Some(p.temperature));
                assert_eq!(entry["cfg_scale"].as_f64(), Some(p.guidance_scale));
                assert_eq!(
                    entry["num_tokens"].as_u64().map(|n| n as usize),
                    Some(p.selected[0].len()),
                    "tokens committed at step {k}"
                );
                let pre = format!("maskgit.step{k}");
                let candidates: Vec<i64> =
                    p.candidates.iter().flatten().map(|&c| c as i64).collect();
                self.ints(&format!("{pre}.mod_pos"), &candidates);
                let key = format!("{pre}.logits");
                let logits: Vec<f64> = p.logits.iter().map(|&v| f64::from(v)).collect();
                self.report.close(
                    &key,
                    &logits,
                    &self.expected.values(&key),
                    LOGITS.0,
                    LOGITS.1,
                );
                self.checked.insert(key);
                let am: Vec<i64> = p.logits.chunks(p.vocab).map(|r| argmax(r) as i64).collect();
                self.ints(&format!("{pre}.argmax"), &am);
                let selected: Vec<i64> = p.selected.iter().flatten().map(|&s| s as i64).collect();
                self.ints(&format!("{pre}.selected_pos"), &selected);
                let m = p.state.get(p.modality).expect("target in state");
                let tokens: Vec<i64> = p
                    .selected
                    .iter()
                    .enumerate()
                    .flat_map(|(b, row)| row.iter().map(move |&s| (b, s)))
                    .map(|(b, s)| m.ids()[b * m.len + s])
                    .collect();
                self.ints(&format!("{pre}.selected_tokens"), &tokens);
                self.ints(&format!("{pre}.tensor_after"), m.ids());
                let key = format!("{pre}.input_mask_after");
                self.report
                    .equal(&key, &m.input_mask, &self.expected.bools(&key));
                self.checked.insert(key);
            }
            GenerationEvent::Token(t) => {
                self.steps.insert(t.step);
                assert_eq!(self.schedule[t.step]["scheme"], "autoregressive");
                assert_eq!(self.ar_logits.len(), t.iteration);
                self.ar_logits.push(t.logits.to_vec());
                self.ar_out = t.sequences.to_vec();
            }
            _ => {}
        }
    }
}

fn replay(kv_cache: bool) {
    let dir = fixture_dir("FOURM_GENERATION_FIXTURE", "generation-a");
    let device = Device::flex();
    let (config, mods, model) = load_model(&dir, &device);
    let inputs = Tensors::read(&dir.join("inputs.safetensors"));
    let expected = Tensors::read(&dir.join("expected.safetensors"));
    let state = generation_state(&inputs, &mods);
    let specials = specials(&config);
    let plan = plan(&config, kv_cache);
    let schedule = config["schedule"].as_array().expect("schedule").clone();

    let mut hook = Replay {
        expected: &expected,
        schedule: &schedule,
        report: Report::default(),
        checked: BTreeSet::new(),
        steps: BTreeSet::new(),
        ar_logits: Vec::new(),
        ar_out: Vec::new(),
    };
    let out = Generator::new(&model, &specials)
        .generate(state, &plan, &mut hook)
        .expect("generation runs");
    assert_eq!(
        hook.steps,
        (0..schedule.len()).collect::<BTreeSet<_>>(),
        "every step of ml-4m's schedule ran"
    );

    let described = config["tensors"]["expected.safetensors"]
        .as_object()
        .expect("expected tensors described");
    let mut r = std::mem::take(&mut hook.report);
    for key in described.keys() {
        if hook.checked.contains(key) {
            continue;
        }
        match key.split('.').collect::<Vec<_>>().as_slice() {
            ["ar", "out"] => {
                let flat: Vec<i64> = hook.ar_out.iter().flatten().copied().collect();
                r.equal(key, &flat, &expected.ints(key));
            }
            ["ar", "last_logits"] => {
                // stored [b, iterations, vocab]; collected per iteration as [b, vocab]
                let batch = hook.ar_out.len();
                let vocab = hook.ar_logits.first().map_or(0, |l| l.len() / batch);
                let actual: Vec<f64> = (0..batch)
                    .flat_map(|b| {
                        hook.ar_logits
                            .iter()
                            .flat_map(move |l| &l[b * vocab..(b + 1) * vocab])
                    })
                    .map(|&v| f64::from(v))
                    .collect();
                r.close(key, &actual, &expected.values(key), LOGITS.0, LOGITS.1);
            }
            ["final", .., "tensor"] | ["final", .., "input_mask"] => {
                let name = &key["final.".len()..key.rfind('.').unwrap()];
                let m = out
                    .get(name)
                    .expect("generated modality in the final state");
                if key.ends_with(".tensor") {
                    r.equal(key, &expected.shape(key)[1..], &[m.len]);
                    r.equal(key, m.ids(), &expected.ints(key));
                } else {
                    r.equal(key, &m.input_mask, &expected.bools(key));
                }
            }
            _ => r.equal(
                key,
                &["described by the fixture but not checked"],
                &["checked"],
            ),
        }
    }
    let cache = if kv_cache { "with" } else { "without" };
    r.finish(&format!(
        "generation fixture {} ({cache} kv cache)",
        dir.display()
    ));
}

#[test]
fn generation_parity_with_kv_cache() {
    replay(true);
}

#[test]
fn generation_parity_without_kv_cache() {
    replay(false);
}
