//! Phase 3 of a generation: the model and its optimizer, initialised from the seed (identical on
//! every rank) or restored from the committed checkpoint the coordinator named.

use fourm_collective::shard_range;
use fourm_data::{DatasetStore, StoreConfig};
use fourm_model::optim::{AdamW, AdamWConfig, CosineSchedule, ParamLayout, scaled_lr};

use super::{Joined, Worker};
use crate::checkpoint;
use crate::error::WorkerError;
use crate::step::TrainState;

impl Worker {
    /// Phase 3: the training state at the generation's first step.
    pub(super) fn restore(&self, joined: &Joined) -> Result<TrainState, WorkerError> {
        let cfg = &self.config;
        let model_config = cfg.model.build()?;
        let mut model =
            model_config.init(&self.data.modalities, cfg.model.init_seed, &self.device)?;
        let layout = ParamLayout::new(&model);
        if cfg.train.rank_samples(joined.world, joined.rank) == 0 {
            return Err(WorkerError::setup(format!(
                "train.global_batch = {} leaves rank {} of {} without samples",
                cfg.train.global_batch, joined.rank, joined.world
            )));
        }
        // With the optimizer state sharded, this rank keeps the moments of its shard only.
        let shard = cfg
            .train
            .shard_optimizer
            .then(|| shard_range(layout.len(), joined.world as usize, joined.rank as usize));
        let range = shard.clone().unwrap_or(0..layout.len());
        // By optimizer step, from the global batch: it does not change with the world size.
        let schedule = CosineSchedule {
            lr: scaled_lr(cfg.train.blr, cfg.train.step_samples(joined.world)),
            min_lr: cfg.train.min_lr,
            warmup_steps: cfg.train.warmup_steps,
            total_steps: joined.total_steps,
        };
        let adamw_config = AdamWConfig {
            betas: cfg.train.betas,
            eps: cfg.train.eps,
            weight_decay: cfg.train.weight_decay,
        };
        let plain = self.device.clone().inner();
        let (adamw, step) = match &joined.restore {
            Some(point) => {
                // Tests wedge a restore here (`FAILPOINTS=restore=sleep(ms)`).
                fail::fail_point!("restore");
                let (root, folder) = split_folder(&point.prefix)?;
                let store = DatasetStore::open_durable(root, StoreConfig::default())?;
                let path = store.root().clone().join(folder);
                let restored = self.runtime.block_on(checkpoint::restore(
                    store.inner(),
                    &path,
                    &mut model,
                    &layout,
                    range.clone(),
                    &plain,
                ))?;
                if restored.trainer.step != point.step
                    || restored.trainer.config_digest != cfg.digest()
                {
                    return Err(WorkerError::setup(format!(
                        "checkpoint {} holds step {} of configuration {}, expected step {} of {}",
                        point.prefix,
                        restored.trainer.step,
                        restored.trainer.config_digest,
                        point.step,
                        cfg.digest()
                    )));
                }
                let adamw = AdamW::from_state_range(
                    adamw_config,
                    &layout,
                    range,
                    restored.exp_avg,
                    restored.exp_avg_sq,
                    restored.adamw_step,
                );
                (adamw, point.step)
            }
            None => (AdamW::new_range(adamw_config, &layout, range, &plain), 0),
        };
        self.reporter.set_committed(step);
        self.control
            .step
            .store(step, std::sync::atomic::Ordering::SeqCst);
        let micro_batches = match cfg.train.micro_batches {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(TrainState {
            model,
            layout,
            adamw,
            schedule,
            step,
            clip_grad: cfg.train.clip_grad,
            micro_batches,
            micro_batch_size: cfg.train.batch_size,
            shard,
        })
    }
}

/// `scheme://…/<root>/step-N` → (`scheme://…/<root>`, `step-N`).
pub(super) fn split_folder(prefix: &str) -> Result<(&str, &str), WorkerError> {
    prefix
        .rsplit_once('/')
        .filter(|(_, f)| !f.is_empty())
        .ok_or_else(|| WorkerError::setup(format!("bad checkpoint prefix `{prefix}`")))
}
