//! Procedural scenes: a few primitives (spheres, cubes, cylinders) with colours and sizes standing
//! on a ground plane, a directional light and a camera looking at them from a random direction.
//! A scene is a pure function of `(seed, index)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::vec3::Vec3;
use fourm_plan::rng_for;

/// Seed-path tag of scene generation (`"scene"`).
const SCENE_TAG: u64 = 0x73_6365_6e65;

/// Shapes, in semantic-class order (class id = 2 + index).
pub const SHAPES: [Shape; 3] = [Shape::Sphere, Shape::Cube, Shape::Cylinder];

/// Semantic classes of the segmentation, by id.
pub const CLASS_NAMES: [&str; 5] = ["background", "ground", "sphere", "cube", "cylinder"];

/// Named object colours (linear RGB in `[0, 1]`).
pub const COLORS: [(&str, [f64; 3]); 8] = [
    ("red", [0.85, 0.12, 0.10]),
    ("green", [0.15, 0.68, 0.22]),
    ("blue", [0.12, 0.28, 0.88]),
    ("yellow", [0.93, 0.83, 0.12]),
    ("purple", [0.55, 0.18, 0.78]),
    ("cyan", [0.12, 0.76, 0.82]),
    ("orange", [0.96, 0.48, 0.08]),
    ("pink", [0.95, 0.45, 0.68]),
];

/// Size classes and their scale (sphere radius, cube half side, cylinder radius).
pub const SIZES: [(&str, f64); 2] = [("small", 0.35), ("large", 0.65)];

/// Ground tones.
const GROUNDS: [[f64; 3]; 3] = [[0.56, 0.55, 0.52], [0.60, 0.55, 0.47], [0.50, 0.56, 0.50]];

/// A primitive shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A sphere resting on the ground.
    Sphere,
    /// A cube standing on the ground, turned about the vertical axis.
    Cube,
    /// A vertical cylinder standing on the ground.
    Cylinder,
}

impl Shape {
    /// Its name (also its det class name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sphere => "sphere",
            Self::Cube => "cube",
            Self::Cylinder => "cylinder",
        }
    }

    /// Its semantic-segmentation class id.
    pub fn class_id(self) -> u8 {
        match self {
            Self::Sphere => 2,
            Self::Cube => 3,
            Self::Cylinder => 4,
        }
    }
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Index into [`COLORS`].
    pub color: usize,
    /// Index into [`SIZES`].
    pub size: usize,
    /// Position of its footprint's centre on the ground (`y = 0`).
    pub position: Vec3Repr,
    /// Rotation about the vertical axis (cubes), radians.
    pub yaw: f64,
}

/// Serializable coordinates.
pub type Vec3Repr = [f64; 3];

impl Object {
    /// Scale of its size class.
    pub fn scale(&self) -> f64 {
        SIZES[self.size].1
    }

    /// Cylinder height.
    pub fn height(&self) -> f64 {
        match self.shape {
            Shape::Sphere | Shape::Cube => 2.0 * self.scale(),
            Shape::Cylinder => 2.4 * self.scale(),
        }
    }

    /// Radius of a vertical cylinder that holds the object (for placement).
    pub fn footprint(&self) -> f64 {
        match self.shape {
            Shape::Cube => self.scale() * std::f64::consts::SQRT_2,
            Shape::Sphere | Shape::Cylinder => self.scale(),
        }
    }

    /// Footprint centre.
    pub fn base(&self) -> Vec3 {
        Vec3::new(self.position[0], self.position[1], self.position[2])
    }

    /// Its colour.
    pub fn rgb(&self) -> Vec3 {
        let c = COLORS[self.color].1;
        Vec3::new(c[0], c[1], c[2])
    }

    /// `"large red sphere"`.
    pub fn description(&self) -> String {
        format!(
            "{} {} {}",
            SIZES[self.size].0,
            COLORS[self.color].0,
            self.shape.name()
        )
    }
}

/// A pinhole camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// Position.
    pub eye: Vec3Repr,
    /// Point looked at.
    pub target: Vec3Repr,
    /// Vertical field of view, radians.
    pub fov_y: f64,
}

/// A procedurally generated scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Objects.
    pub objects: Vec<Object>,
    /// Camera.
    pub camera: Camera,
    /// Direction *towards* the light (unit).
    pub light: Vec3Repr,
    /// Ambient light level.
    pub ambient: f64,
    /// Ground colour.
    pub ground: Vec3Repr,
}

/// How scenes are generated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneConfig {
    /// Fewest objects.
    pub min_objects: usize,
    /// Most objects.
    pub max_objects: usize,
    /// Camera zoom: the camera stands `1 / zoom` times as far from the scene's centre (at 2, the
    /// objects look twice as large and those near the edge of the ground may leave the frame).
    #[serde(default = "unit_zoom")]
    pub zoom: f64,
}

fn unit_zoom() -> f64 {
    1.0
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            min_objects: 2,
            max_objects: 4,
            zoom: 1.0,
        }
    }
}

impl Scene {
    /// The scene of sample `index` of a dataset seeded by `seed`.
    pub fn generate(config: &SceneConfig, seed: u64, index: u64) -> Self {
        let mut rng = rng_for(&[seed, SCENE_TAG, index]);
        let max = config.max_objects.max(config.min_objects);
        let wanted = rng.random_range(config.min_objects..=max);
        let mut objects: Vec<Object> = Vec::new();
        for _ in 0..wanted {
            if let Some(o) = place_object(&objects, &mut rng) {
                objects.push(o);
            }
        }
        let azimuth = rng.random_range(0.0..std::f64::consts::TAU);
        let elevation = rng.random_range(12f64..32.0).to_radians();
        let distance = rng.random_range(6.5..8.5) / config.zoom;
        let target = [0.0, 0.4, 0.0];
        let eye = [
            distance * elevation.cos() * azimuth.cos(),
            target[1] + distance * elevation.sin(),
            distance * elevation.cos() * azimuth.sin(),
        ];
        let light_azimuth = rng.random_range(0.0..std::f64::consts::TAU);
        let light_elevation = rng.random_range(35f64..70.0).to_radians();
        let light = [
            light_elevation.cos() * light_azimuth.cos(),
            light_elevation.sin(),
            light_elevation.cos() * light_azimuth.sin(),
        ];
        Self {
            objects,
            camera: Camera {
                eye,
                target,
                fov_y: rng.random_range(40f64..50.0).to_radians(),
            },
            light,
            ambient: rng.random_range(0.22..0.35),
            ground: GROUNDS[rng.random_range(0..GROUNDS.len())],
        }
    }
}

/// A random object that does not overlap `placed` (`None` after 100 tries).
fn place_object(placed: &[Object], rng: &mut ChaCha8Rng) -> Option<Object> {
    for _ in 0..100 {
        let candidate = Object {
            shape: SHAPES[rng.random_range(0..SHAPES.len())],
            color: rng.random_range(0..COLORS.len()),
            size: rng.random_range(0..SIZES.len()),
            position: [
                rng.random_range(-2.5..2.5),
                0.0,
                rng.random_range(-2.5..2.5),
            ],
            yaw: rng.random_range(0.0..std::f64::consts::FRAC_PI_2),
        };
        let clear = placed.iter().all(|o| {
            let d = o.base() - candidate.base();
            d.length() > o.footprint() + candidate.footprint() + 0.15
        });
        if clear {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_varied() {
        let c = SceneConfig::default();
        assert_eq!(Scene::generate(&c, 1, 5), Scene::generate(&c, 1, 5));
        assert_ne!(Scene::generate(&c, 1, 5), Scene::generate(&c, 1, 6));
        assert_ne!(Scene::generate(&c, 1, 5), Scene::generate(&c, 2, 5));
        for i in 0..50 {
            let s = Scene::generate(&c, 3, i);
            assert!((1..=4).contains(&s.objects.len()));
            // Zoom moves the camera towards the target and changes nothing else.
            let zoomed = Scene::generate(&SceneConfig { zoom: 2.0, ..c }, 3, i);
            let distance = |s: &Scene| {
                let (e, t) = (s.camera.eye, s.camera.target);
                (Vec3::new(e[0], e[1], e[2]) - Vec3::new(t[0], t[1], t[2])).length()
            };
            assert!((distance(&s) - 2.0 * distance(&zoomed)).abs() < 1e-9);
            assert_eq!(zoomed.objects, s.objects);
            for (a, oa) in s.objects.iter().enumerate() {
                for ob in &s.objects[a + 1..] {
                    assert!((oa.base() - ob.base()).length() > oa.footprint() + ob.footprint());
                }
            }
        }
    }
}
