//! Captions of the synthetic dataset ("a small red sphere behind a large yellow cube and a large
//! blue cylinder", or "an empty ground plane") read back into objects and relations, and scored
//! attribute by attribute against the true caption: each true object's shape, colour and size
//! at its position, each true relation at its pair. A generated caption may be malformed: it is
//! read leniently, and whatever it lacks counts as wrong.

use fourm_synth::scene::{COLORS, SHAPES, SIZES};
use serde::{Deserialize, Serialize};

use super::Ratio;

/// An object as a caption describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    /// `small`, `large`.
    pub size: Option<String>,
    /// A colour name.
    pub colour: Option<String>,
    /// `sphere`, `cube`, `cylinder`.
    pub shape: Option<String>,
}

/// A caption read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Objects in order.
    pub objects: Vec<Described>,
    /// The relation between object `i` and `i + 1`, where the caption states one.
    pub relations: Vec<(usize, String)>,
    /// "an empty ground plane".
    pub empty: bool,
}

/// Reads a caption.
pub fn parse(caption: &str) -> Parsed {
    let words: Vec<&str> = caption.split_whitespace().collect();
    let is = |w: &str, list: &[&str]| list.contains(&w);
    let sizes: Vec<&str> = SIZES.iter().map(|s| s.0).collect();
    let colours: Vec<&str> = COLORS.iter().map(|c| c.0).collect();
    let shapes: Vec<&str> = SHAPES.iter().map(|s| s.name()).collect();
    let mut parsed = Parsed {
        empty: caption.contains("empty"),
        ..Parsed::default()
    };
    let mut current: Option<Described> = None;
    let mut pending_relation: Option<String> = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let attribute = is(w, &sizes) || is(w, &colours) || is(w, &shapes);
        if attribute {
            let o = current.get_or_insert_with(Described::default);
            let slot = if is(w, &sizes) {
                &mut o.size
            } else if is(w, &colours) {
                &mut o.colour
            } else {
                &mut o.shape
            };
            if slot.is_some() {
                // A second value of the same attribute starts another object.
                let done = current.take().expect("just inserted");
                push(&mut parsed, done, &mut pending_relation);
                continue;
            }
            *slot = Some(w.to_string());
        } else {
            if let Some(done) = current.take() {
                push(&mut parsed, done, &mut pending_relation);
            }
            let relation = match (w, words.get(i + 1), words.get(i + 2)) {
                ("in", Some(&"front"), Some(&"of")) => Some(("in front of", 3)),
                ("left", Some(&"of"), _) => Some(("left of", 2)),
                ("behind", _, _) => Some(("behind", 1)),
                _ => None,
            };
            if let Some((r, len)) = relation {
                pending_relation = Some(r.to_string());
                i += len;
                continue;
            }
            if w == "and" {
                pending_relation = None;
            }
        }
        i += 1;
    }
    if let Some(done) = current.take() {
        push(&mut parsed, done, &mut pending_relation);
    }
    parsed
}

fn push(parsed: &mut Parsed, object: Described, relation: &mut Option<String>) {
    if let Some(r) = relation.take()
        && !parsed.objects.is_empty()
    {
        parsed.relations.push((parsed.objects.len() - 1, r));
    }
    parsed.objects.push(object);
}

/// Caption scores: exact matches and per-attribute hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionScore {
    /// Captions equal to the truth.
    pub exact: Ratio,
    /// Shapes at the right position (and an empty scene called empty).
    pub shape: Ratio,
    /// Colours.
    pub colour: Ratio,
    /// Sizes.
    pub size: Ratio,
    /// Relations between the right pairs.
    pub relation: Ratio,
}

impl CaptionScore {
    /// The score of `pred` against `truth`.
    pub fn of(pred: &str, truth: &str) -> Self {
        let (p, t) = (parse(pred), parse(truth));
        let mut s = Self {
            exact: Ratio {
                hits: f64::from(u8::from(pred.trim() == truth.trim())),
                total: 1.0,
            },
            ..Self::default()
        };
        if t.empty && t.objects.is_empty() {
            s.shape = Ratio {
                hits: f64::from(u8::from(p.objects.is_empty())),
                total: 1.0,
            };
            return s;
        }
        for (k, truth_object) in t.objects.iter().enumerate() {
            let guess = p.objects.get(k);
            let hit = |f: fn(&Described) -> &Option<String>| Ratio {
                hits: f64::from(u8::from(
                    guess.is_some_and(|g| f(g).is_some() && f(g) == f(truth_object)),
                )),
                total: 1.0,
            };
            s.shape.add(hit(|o| &o.shape));
            s.colour.add(hit(|o| &o.colour));
            s.size.add(hit(|o| &o.size));
        }
        for (pair, relation) in &t.relations {
            let found = p.relations.iter().any(|(q, r)| q == pair && r == relation);
            s.relation.add(Ratio {
                hits: f64::from(u8::from(found)),
                total: 1.0,
            });
        }
        s
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &CaptionScore) {
        self.exact.add(other.exact);
        self.shape.add(other.shape);
        self.colour.add(other.colour);
        self.size.add(other.size);
        self.relation.add(other.relation);
    }

    /// All attributes together (shape, colour, size, relation).
    pub fn attributes(&self) -> Ratio {
        let mut all = self.shape;
        all.add(self.colour);
        all.add(self.size);
        all.add(self.relation);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_read_back_into_objects_and_relations() {
        let p = parse("a small red sphere behind a large yellow cube and a large blue cylinder");
        assert_eq!(p.objects.len(), 3);
        assert_eq!(p.objects[0].colour.as_deref(), Some("red"));
        assert_eq!(p.objects[2].shape.as_deref(), Some("cylinder"));
        assert_eq!(p.relations, vec![(0, "behind".to_string())]);
        assert!(parse("an empty ground plane").empty);
        let p = parse("a large green cube in front of a small red sphere");
        assert_eq!(p.relations, vec![(0, "in front of".to_string())]);
    }

    #[test]
    fn perfect_partial_and_constant_captions() {
        let truth = "a small red sphere left of a large yellow cube";
        let perfect = CaptionScore::of(truth, truth);
        assert_eq!(perfect.exact.value(), 1.0);
        assert_eq!(perfect.attributes().value(), 1.0);
        // Right shapes and sizes, wrong colours, relation missing.
        let partial = CaptionScore::of("a small blue sphere and a large blue cube", truth);
        assert_eq!(partial.exact.value(), 0.0);
        assert_eq!(partial.shape.value(), 1.0);
        assert_eq!(partial.size.value(), 1.0);
        assert_eq!(partial.colour.value(), 0.0);
        assert_eq!(partial.relation.value(), 0.0);
        assert!((partial.attributes().value() - 4.0 / 7.0).abs() < 1e-12);
        // Garbage scores nothing; an empty scene called empty scores.
        assert_eq!(CaptionScore::of("a a a a", truth).attributes().value(), 0.0);
        let empty = "an empty ground plane";
        assert_eq!(CaptionScore::of(empty, empty).attributes().value(), 1.0);
        assert_eq!(CaptionScore::of(truth, empty).attributes().value(), 0.0);
    }
}
