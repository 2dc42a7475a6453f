//! The ray caster: one ray per pixel through a pinhole camera, nearest hit among the objects and
//! the ground plane, Lambert shading with a shadow ray. Every modality of a pixel comes from the
//! same hit, so RGB, depth, normals, segmentation and instances are aligned by construction.

use crate::scene::{Object, Scene};
use crate::shape::{Hit, intersect};
use crate::vec3::Vec3;

/// Depth of pixels that see the sky (and the largest depth stored).
pub const DEPTH_FAR: f32 = 30.0;

/// Semantic class of the sky.
pub const CLASS_BACKGROUND: u8 = 0;
/// Semantic class of the ground.
pub const CLASS_GROUND: u8 = 1;

/// The aligned modalities of one rendered view, row-major, `height × width` pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Colour, `[h, w, 3]` in `[0, 1]`.
    pub rgb: Vec<f32>,
    /// Depth along the camera axis (z-depth), `[h, w]`; [`DEPTH_FAR`] for the sky.
    pub depth: Vec<f32>,
    /// Unit surface normal in camera space (x right, y up, z towards the camera), `[h, w, 3]`;
    /// zero for the sky.
    pub normal: Vec<f32>,
    /// Semantic class per pixel (`scene::CLASS_NAMES`).
    pub semseg: Vec<u8>,
    /// Object per pixel: 0 for none, `i + 1` for object `i` of the scene.
    pub instance: Vec<u16>,
}

/// The camera's frame: position, forward, right and up axes, and the image-plane half extents.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Camera position.
    pub eye: Vec3,
    /// Viewing direction (unit).
    pub forward: Vec3,
    /// Right (unit).
    pub right: Vec3,
    /// Up (unit).
    pub up: Vec3,
    /// `tan(fov_y / 2)`.
    pub half_height: f64,
    /// `half_height · width / height`.
    pub half_width: f64,
}

impl View {
    /// The view of `scene` for a `width × height` image.
    pub fn new(scene: &Scene, width: usize, height: usize) -> Self {
        let eye = v(scene.camera.eye);
        let forward = (v(scene.camera.target) - eye).normalized();
        let right = forward.cross(Vec3::new(0.0, 1.0, 0.0)).normalized();
        let up = right.cross(forward);
        let half_height = (scene.camera.fov_y / 2.0).tan();
        Self {
            eye,
            forward,
            right,
            up,
            half_height,
            half_width: half_height * width as f64 / height as f64,
        }
    }

    /// Unit ray direction through the centre of pixel `(row, col)`.
    pub fn ray(&self, row: usize, col: usize, width: usize, height: usize) -> Vec3 {
        let u = ((col as f64 + 0.5) / width as f64 * 2.0 - 1.0) * self.half_width;
        let w = (1.0 - (row as f64 + 0.5) / height as f64 * 2.0) * self.half_height;
        (self.forward + self.right * u + self.up * w).normalized()
    }

    /// A world direction in camera coordinates (x right, y up, z towards the camera).
    pub fn to_camera(&self, d: Vec3) -> Vec3 {
        Vec3::new(d.dot(self.right), d.dot(self.up), -d.dot(self.forward))
    }
}

/// Renders `scene` at `width × height`.
pub fn render(scene: &Scene, width: usize, height: usize) -> Frame {
    let view = View::new(scene, width, height);
    let light = v(scene.light).normalized();
    let n = width * height;
    let mut frame = Frame {
        width,
        height,
        rgb: vec![0.0; 3 * n],
        depth: vec![DEPTH_FAR; n],
        normal: vec![0.0; 3 * n],
        semseg: vec![CLASS_BACKGROUND; n],
        instance: vec![0; n],
    };
    for row in 0..height {
        for col in 0..width {
            let p = row * width + col;
            let dir = view.ray(row, col, width, height);
            let hit = nearest(&scene.objects, view.eye, dir);
            let colour = match hit {
                None => sky(dir),
                Some((hit, object)) => {
                    let point = view.eye + dir * hit.t;
                    let (base, class, id) = match object {
                        Some(i) => (
                            scene.objects[i].rgb(),
                            scene.objects[i].shape.class_id(),
                            i + 1,
                        ),
                        None => (v(scene.ground), CLASS_GROUND, 0),
                    };
                    let lit = hit.normal.dot(light).max(0.0);
                    let shadowed = lit > 0.0
                        && nearest(&scene.objects, point + hit.normal * 1e-4, light)
                            .is_some_and(|(_, o)| o.is_some());
                    let shade =
                        scene.ambient + (1.0 - scene.ambient) * if shadowed { 0.0 } else { lit };
                    let z = (hit.t * dir.dot(view.forward)) as f32;
                    frame.depth[p] = z.min(DEPTH_FAR);
                    let nc = view.to_camera(hit.normal);
                    frame.normal[3 * p..3 * p + 3].copy_from_slice(&[
                        nc.x as f32,
                        nc.y as f32,
                        nc.z as f32,
                    ]);
                    frame.semseg[p] = class;
                    frame.instance[p] = id as u16;
                    base * shade
                }
            };
            frame.rgb[3 * p..3 * p + 3].copy_from_slice(&[
                colour.x.clamp(0.0, 1.0) as f32,
                colour.y.clamp(0.0, 1.0) as f32,
                colour.z.clamp(0.0, 1.0) as f32,
            ]);
        }
    }
    frame
}

/// The nearest hit: with an object (`Some(index)`) or the ground (`None`).
pub fn nearest(objects: &[Object], origin: Vec3, dir: Vec3) -> Option<(Hit, Option<usize>)> {
    let mut best = ground(origin, dir).map(|h| (h, None));
    for (i, o) in objects.iter().enumerate() {
        if let Some(h) = intersect(o, origin, dir)
            && best.is_none_or(|(b, _)| h.t < b.t)
        {
            best = Some((h, Some(i)));
        }
    }
    best
}

/// The ground plane `y = 0`, seen from above.
fn ground(origin: Vec3, dir: Vec3) -> Option<Hit> {
    if dir.y >= -1e-9 || origin.y <= 0.0 {
        return None;
    }
    Some(Hit {
        t: -origin.y / dir.y,
        normal: Vec3::new(0.0, 1.0, 0.0),
    })
}

/// Sky colour: lighter at the horizon.
fn sky(dir: Vec3) -> Vec3 {
    let up = dir.y.clamp(0.0, 1.0);
    Vec3::new(0.78, 0.84, 0.92) * (1.0 - up) + Vec3::new(0.42, 0.58, 0.86) * up
}

fn v(a: [f64; 3]) -> Vec3 {
    Vec3::new(a[0], a[1], a[2])
}
