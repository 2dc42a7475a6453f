//! AdamW state files. Unsharded, rank 0 writes `optimizer.safetensors` (the moments over the
//! whole flat vector); with the state sharded, every rank writes
//! `optimizer-<rank>-of-<world>.safetensors` with its range. Each file records its offset, the
//! length of the whole vector, the parameter layout and the AdamW step, so a restore at any world
//! size, sharded or not, assembles whatever range it needs from whichever files hold it (like
//! PyTorch DCP's resharding).

use std::collections::HashMap;
use std::ops::Range;

use fourm_model::optim::ParamLayout;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::CheckpointError;

/// The unsharded optimizer file.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The optimizer file of rank `rank` of `world` (sharded), or [`OPTIMIZER_FILE`].
pub fn optimizer_file(shard: Option<(u32, u32)>) -> String {
    match shard {
        None => OPTIMIZER_FILE.to_string(),
        Some((rank, world)) => format!("optimizer-{rank:05}-of-{world:05}.safetensors"),
    }
}

/// Whether a checkpoint file holds optimizer state.
pub fn is_optimizer_file(name: &str) -> bool {
    name.starts_with("optimizer") && name.ends_with(".safetensors")
}

/// The moments of a range of the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerPart {
    /// First element.
    pub offset: usize,
    /// First moments.
    pub exp_avg: Vec<f32>,
    /// Second moments.
    pub exp_avg_sq: Vec<f32>,
    /// AdamW steps taken.
    pub step: u64,
}

fn layout_of(layout: &ParamLayout) -> Vec<(String, Vec<usize>)> {
    layout
        .entries()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.shape.clone()))
        .collect()
}

/// The bytes of `part`'s file.
pub fn encode(part: &OptimizerPart, layout: &ParamLayout) -> Result<Vec<u8>, String> {
    let metadata = HashMap::from([
        ("step".to_string(), part.step.to_string()),
        ("offset".to_string(), part.offset.to_string()),
        ("total".to_string(), layout.len().to_string()),
        (
            "layout".to_string(),
            serde_json::to_string(&layout_of(layout)).map_err(|e| e.to_string())?,
        ),
    ]);
    let m: Vec<u8> = part.exp_avg.iter().flat_map(|x| x.to_le_bytes()).collect();
    let v: Vec<u8> = part
        .exp_avg_sq
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let views = vec![
        (
            "exp_avg",
            TensorView::new(Dtype::F32, vec![part.exp_avg.len()], &m).map_err(|e| e.to_string())?,
        ),
        (
            "exp_avg_sq",
            TensorView::new(Dtype::F32, vec![part.exp_avg_sq.len()], &v)
                .map_err(|e| e.to_string())?,
        ),
    ];
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// Reads a file written by [`encode`] for `layout` (`name` names it in errors). Files written
/// before sharding existed have no offset: they start at 0.
pub fn decode(
    bytes: &[u8],
    layout: &ParamLayout,
    name: &str,
) -> Result<OptimizerPart, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: name.to_string(),
        reason,
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let stored: Vec<(String, Vec<usize>)> = meta
        .get("layout")
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| corrupt("missing parameter layout".into()))?;
    if stored != layout_of(layout) {
        return Err(corrupt("parameter layout differs from the model's".into()));
    }
    let number = |key: &str, default: Option<u64>| -> Result<u64, CheckpointError> {
        match meta.get(key) {
            Some(v) => v.parse().map_err(|_| corrupt(format!("bad {key} `{v}`"))),
            None => default.ok_or_else(|| corrupt(format!("missing {key}"))),
        }
    };
    let step = number("step", None)?;
    let offset = number("offset", Some(0))? as usize;
    let total = number("total", Some(layout.len() as u64))? as usize;
    if total != layout.len() {
        return Err(corrupt(format!(
            "covers a vector of {total} elements, the model has {}",
            layout.len()
        )));
    }
    let vector = |key: &str| -> Result<Vec<f32>, CheckpointError> {
        let t = st.tensor(key).map_err(|e| corrupt(format!("{key}: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
            return Err(corrupt(format!("{key}: expected a 1-D f32 tensor")));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let (exp_avg, exp_avg_sq) = (vector("exp_avg")?, vector("exp_avg_sq")?);
    let end = offset.checked_add(exp_avg.len());
    if exp_avg.len() != exp_avg_sq.len() || end.is_none_or(|end| end > total) {
        return Err(corrupt(format!(
            "moments of {} and {} elements at offset {offset} do not fit {total}",
            exp_avg.len(),
            exp_avg_sq.len()
        )));
    }
    Ok(OptimizerPart {
        offset,
        exp_avg,
        exp_avg_sq,
        step,
    })
}

/// Assembles the moments of `range` from parts read one at a time: each part's overlap with
/// `range` is copied in, and every part's extent is remembered, so that [`Assembler::finish`]
/// can check the parts tile the whole vector exactly once with one AdamW step.
#[derive(Debug)]
pub struct Assembler {
    range: Range<usize>,
    total: usize,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    extents: Vec<(Range<usize>, String)>,
    step: Option<u64>,
}

impl Assembler {
    /// An assembler of `range` of a vector of `total` elements.
    pub fn new(range: Range<usize>, total: usize) -> Self {
        let n = range.len();
        Self {
            range,
            total,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
            extents: Vec::new(),
            step: None,
        }
    }

    /// Adds the part read from file `name`.
    pub fn add(&mut self, part: OptimizerPart, name: &str) -> Result<(), CheckpointError> {
        if let Some(step) = self.step
            && step != part.step
        {
            return Err(CheckpointError::Corrupt {
                path: name.to_string(),
                reason: format!("AdamW step {} where the other files have {step}", part.step),
            });
        }
        self.step = Some(part.step);
        let extent = part.offset..part.offset + part.exp_avg.len();
        let (lo, hi) = (
            extent.start.max(self.range.start),
            extent.end.min(self.range.end),
        );
        if lo < hi {
            let (from, to) = (lo - extent.start, lo - self.range.start);
            let n = hi - lo;
            self.exp_avg[to..to + n].copy_from_slice(&part.exp_avg[from..from + n]);
            self.exp_avg_sq[to..to + n].copy_from_slice(&part.exp_avg_sq[from..from + n]);
        }
        self.extents.push((extent, name.to_string()));
        Ok(())
    }

    /// The moments of the range and the AdamW step, once the parts are known to tile the
    /// vector; `folder` names the checkpoint in errors.
    pub fn finish(mut self, folder: &str) -> Result<OptimizerPart, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: folder.to_string(),
            reason,
        };
        self.extents.sort_by_key(|(r, _)| (r.start, r.end));
        let mut next = 0;
        for (extent, name) in &self.extents {
            if extent.start != next {
                return Err(corrupt(format!(
                    "the optimizer files do not tile the parameters: {name} starts at {}, \
                     expected {next}",
                    extent.start
                )));
            }
            next = extent.end;
        }
        if next != self.total {
            return Err(corrupt(format!(
                "the optimizer files cover {next} of {} elements",
                self.total
            )));
        }
        Ok(OptimizerPart {
            offset: self.range.start,
            exp_avg: self.exp_avg,
            exp_avg_sq: self.exp_avg_sq,
            step: self.step.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: usize, len: usize, step: u64) -> OptimizerPart {
        OptimizerPart {
            offset,
            exp_avg: (offset..offset + len).map(|i| i as f32).collect(),
            exp_avg_sq: (offset..offset + len).map(|i| -(i as f32)).collect(),
            step,
        }
    }

    #[test]
    fn any_range_is_reassembled_from_any_sharding() {
        let total = 10;
        // Written by 3 ranks (shards of 4, 4, 2), read back as 2 ranks and as 1.
        for reader in [0..5, 5..10, 0..10, 3..7] {
            let mut a = Assembler::new(reader.clone(), total);
            for (offset, len) in [(8, 2), (0, 4), (4, 4)] {
                a.add(part(offset, len, 7), "f").unwrap();
            }
            let got = a.finish("step-1").unwrap();
            assert_eq!(got.step, 7);
            let want: Vec<f32> = reader.clone().map(|i| i as f32).collect();
            assert_eq!(got.exp_avg, want);
            assert_eq!(got.exp_avg_sq, want.iter().map(|x| -x).collect::<Vec<_>>());
        }
    }

    #[test]
    fn gaps_overlaps_and_mixed_steps_are_refused() {
        let mut a = Assembler::new(0..10, 10);
        a.add(part(0, 4, 1), "a").unwrap();
        a.add(part(5, 5, 1), "b").unwrap();
        assert!(a.finish("s").is_err(), "a gap");
        let mut a = Assembler::new(0..10, 10);
        a.add(part(0, 6, 1), "a").unwrap();
        a.add(part(5, 5, 1), "b").unwrap();
        assert!(a.finish("s").is_err(), "an overlap");
        let mut a = Assembler::new(0..10, 10);
        a.add(part(0, 5, 1), "a").unwrap();
        assert!(a.add(part(5, 5, 2), "b").is_err(), "two steps");
    }
}
