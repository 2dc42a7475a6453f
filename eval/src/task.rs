//! Cross-modal tasks: generate one modality from another (`rgb->depth`, `caption->rgb`, …).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kinds a task can name: the image-like modalities by kind, and the two sequences.
pub const KINDS: [&str; 6] = ["rgb", "depth", "normal", "semseg", "caption", "det"];

/// The tasks `fourm eval` runs unless told otherwise.
pub const DEFAULT_TASKS: [&str; 6] = [
    "rgb->depth",
    "rgb->semseg",
    "rgb->normal",
    "rgb->caption",
    "caption->rgb",
    "rgb->det",
];

/// Generating `target` from `source` alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Task {
    /// The condition's kind.
    pub source: String,
    /// The generated kind.
    pub target: String,
}

impl Task {
    /// Whether the target is a token grid (not a sequence).
    pub fn image_target(&self) -> bool {
        !matches!(self.target.as_str(), "caption" | "det")
    }

    /// Whether the source is a token grid.
    pub fn image_source(&self) -> bool {
        !matches!(self.source.as_str(), "caption" | "det")
    }

    /// The default tasks.
    pub fn defaults() -> Vec<Task> {
        DEFAULT_TASKS
            .iter()
            .map(|t| t.parse().expect("the default tasks parse"))
            .collect()
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.source, self.target)
    }
}

impl FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (source, target) = s
            .split_once("->")
            .ok_or_else(|| format!("task `{s}`: expected SOURCE->TARGET, e.g. rgb->depth"))?;
        for kind in [source, target] {
            if !KINDS.contains(&kind) {
                return Err(format!("task `{s}`: `{kind}` is not one of {KINDS:?}"));
            }
        }
        if source == target {
            return Err(format!("task `{s}`: source and target are the same"));
        }
        Ok(Self {
            source: source.into(),
            target: target.into(),
        })
    }
}

impl TryFrom<String> for Task {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Task> for String {
    fn from(t: Task) -> Self {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_parse_and_print() {
        let t: Task = "rgb->semseg".parse().unwrap();
        assert!(t.image_target() && t.image_source());
        assert_eq!(t.to_string(), "rgb->semseg");
        assert!("caption->rgb".parse::<Task>().unwrap().image_target());
        assert!("rgb-depth".parse::<Task>().is_err());
        assert!("rgb->sound".parse::<Task>().is_err());
        assert!("rgb->rgb".parse::<Task>().is_err());
        assert_eq!(Task::defaults().len(), 6);
    }
}
