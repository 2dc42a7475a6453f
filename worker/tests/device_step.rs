//! The step hands the flat gradient to the collective in one call, in the memory where it lives:
//! a collective that takes that memory ([`Collective::device_memory`], NCCL for CUDA tensors) is
//! given the gradient's own buffer, and nothing else in the step copies the gradient to the host.
//!
//! On the CPU backend tensors live in host memory, so a recording collective that declares it
//! takes host memory stands in for NCCL: it is given the address of the gradient's storage, reads
//! it there and sums in place (as if a second rank had contributed the same gradient).
// The recording collective reads and writes the buffer it is given by address, as NCCL does.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex};

use burn::tensor::Device;
use fourm_collective::{AbortHandle, Collective, CollectiveError, DeviceMemory};
use fourm_model::optim::{AdamW, AdamWConfig, CosineSchedule, ParamLayout};
use fourm_model::{FourMConfig, Modalities, StepOptions, random_batch};
use fourm_worker::step::TrainState;

/// One call the step made.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// `all_reduce_sum` of a host slice: its values before the sum.
    Host(Vec<f32>),
    /// `all_reduce_sum_device`: the values found at the address.
    Device(Vec<f32>),
    /// Anything else (named).
    Other(&'static str),
}

/// Rank 0 of a pretend group of two whose other rank contributes exactly what rank 0 does: every
/// sum doubles the buffer.
struct Recording {
    takes: Option<DeviceMemory>,
    calls: Arc<Mutex<Vec<Call>>>,
    abort: AbortHandle,
}

impl Recording {
    fn new(takes: Option<DeviceMemory>) -> (Self, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = Self {
            takes,
            calls: calls.clone(),
            abort: AbortHandle::new(),
        };
        (c, calls)
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Collective for Recording {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        2
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.record(Call::Host(buf.to_vec()));
        buf.iter_mut().for_each(|x| *x *= 2.0);
        Ok(())
    }
    fn reduce_scatter_sum(&mut self, _: &mut [f32]) -> Result<(), CollectiveError> {
        self.record(Call::Other("reduce_scatter_sum"));
        Ok(())
    }
    fn all_gather(&mut self, _: &mut [f32]) -> Result<(), CollectiveError> {
        self.record(Call::Other("all_gather"));
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32], _: usize) -> Result<(), CollectiveError> {
        self.record(Call::Other("broadcast"));
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.record(Call::Other("barrier"));
        Ok(())
    }
    fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        self.takes
    }
    fn all_reduce_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        _stream: u64,
    ) -> Result<(), CollectiveError> {
        assert_eq!(self.takes, Some(DeviceMemory::Host));
        // SAFETY: the step hands over a live host buffer of `len` f32s that nothing else touches
        // until this returns (the contract of `all_reduce_sum_device`).
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, len) };
        self.record(Call::Device(buf.to_vec()));
        buf.iter_mut().for_each(|x| *x *= 2.0);
        Ok(())
    }
    fn implementation(&self) -> &'static str {
        "recording"
    }
}

fn train_state() -> TrainState {
    let modalities = Modalities::perf();
    let model = FourMConfig::debug()
        .init(&modalities, 5, &Device::flex().autodiff())
        .unwrap();
    let layout = ParamLayout::new(&model);
    let adamw = AdamW::new(AdamWConfig::default(), &layout, &Device::flex());
    TrainState {
        model,
        layout,
        adamw,
        schedule: CosineSchedule {
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 0,
            total_steps: 10,
        },
        step: 0,
        clip_grad: 1.0,
        micro_batches: 1,
        // Two micro-batches of 2: the accumulation stays on the device too.
        micro_batch_size: 2,
        shard: None,
    }
}

/// Two steps of `state` with `collective`; the calls of each step and the results.
fn run(takes: Option<DeviceMemory>) -> (Vec<Vec<Call>>, TrainState, Vec<usize>) {
    let mut state = train_state();
    let modalities = Modalities::perf();
    let options = StepOptions::new(24, 20);
    let (mut collective, calls) = Recording::new(takes);
    let mut per_step = Vec::new();
    let mut host = Vec::new();
    for seed in 0..2 {
        let batch = random_batch(&modalities, 4, 24, 20, 40 + seed);
        let result = state
            .step(&batch, &options, &mut collective, false)
            .unwrap();
        host.push(result.host_elements);
        per_step.push(std::mem::take(&mut *calls.lock().unwrap()));
    }
    (per_step, state, host)
}

#[test]
fn a_collective_that_takes_device_memory_gets_the_gradient_buffer_in_one_call() {
    let (device_calls, device_state, device_host) = run(Some(DeviceMemory::Host));
    let (host_calls, host_state, host_host) = run(None);
    let n = device_state.layout.len();
    let small = |calls: &[Call]| -> usize {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Host(v) if v.len() < 16))
            .count()
    };
    for (step, (with_device, with_host)) in device_calls.iter().zip(&host_calls).enumerate() {
        // With device memory: one device call over the whole gradient; the host calls are the
        // target counts and the scalars, nothing of gradient size.
        let device: Vec<&Vec<f32>> = with_device
            .iter()
            .filter_map(|c| match c {
                Call::Device(v) => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(device.len(), 1, "step {step}: {with_device:?}");
        assert_eq!(device[0].len(), n);
        assert_eq!(small(with_device), with_device.len() - 1, "step {step}");
        assert!(!with_device.iter().any(|c| matches!(c, Call::Other(_))));
        // Without: the same gradient goes through one host slice (the tensor's own storage on
        // the CPU backend), with the same values.
        let host: Vec<&Vec<f32>> = with_host
            .iter()
            .filter_map(|c| match c {
                Call::Host(v) if v.len() == n => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(host.len(), 1, "step {step}");
        assert!(!with_host.iter().any(|c| matches!(c, Call::Device(_))));
        assert_eq!(
            device[0], host[0],
            "step {step}: the buffer given is the gradient"
        );
        assert!(device[0].iter().any(|g| *g != 0.0));
        assert_eq!(small(with_host), with_host.len() - 1);
    }
    // Neither path copied the gradient between device and host memory.
    assert_eq!(device_host, vec![0, 0]);
    assert_eq!(host_host, vec![0, 0]);
    // And the sums were written in place: both runs took the same update.
    assert_eq!(
        device_state.param_digest().unwrap(),
        host_state.param_digest().unwrap()
    );
    assert_ne!(
        device_state.param_digest().unwrap(),
        train_state().param_digest().unwrap()
    );
}

#[test]
fn the_norm_and_loss_are_those_of_the_in_place_sum() {
    // The pretend second rank contributes the same counts and gradient: the global counts double,
    // so this rank's gradient is half the local batch's, and the in-place sum brings it back to
    // the local batch's gradient. A norm taken before the sum, or a sum that did not land in the
    // tensor, would be half of it.
    let mut state = train_state();
    let modalities = Modalities::perf();
    let batch = random_batch(&modalities, 4, 24, 20, 7);
    let options = StepOptions::new(24, 20);
    let local = state
        .model
        .gradients(&state.layout, &batch, &options, 1)
        .unwrap();
    let (mut collective, _) = Recording::new(Some(DeviceMemory::Host));
    let result = state
        .step(&batch, &options, &mut collective, false)
        .unwrap();
    assert!(
        (result.loss - local.loss).abs() < 1e-4 * local.loss.abs(),
        "{} vs {}",
        result.loss,
        local.loss
    );
    let local_norm = fourm_model::optim::global_norm(&local.grads);
    assert!(
        (result.grad_norm - local_norm).abs() < 1e-3 * local_norm,
        "{} vs {local_norm}",
        result.grad_norm
    );
}
