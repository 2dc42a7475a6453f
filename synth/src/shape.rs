//! Ray–object intersection, and the signed distance of a point to an object (used by the
//! alignment tests to check that depth and normals lie on the object they are attributed to).

use crate::scene::{Object, Shape};
use crate::vec3::Vec3;

/// Rays closer than this are ignored (self-intersection).
pub const T_MIN: f64 = 1e-6;

/// A ray hit: distance along the (unit) ray and the outward unit normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Distance along the ray.
    pub t: f64,
    /// Outward surface normal (world space).
    pub normal: Vec3,
}

/// The nearest hit of the ray `origin + t·dir` (`dir` unit) with `object`.
pub fn intersect(object: &Object, origin: Vec3, dir: Vec3) -> Option<Hit> {
    let s = object.scale();
    match object.shape {
        Shape::Sphere => {
            let c = object.base() + Vec3::new(0.0, s, 0.0);
            let oc = origin - c;
            let b = oc.dot(dir);
            let disc = b * b - (oc.dot(oc) - s * s);
            if disc < 0.0 {
                return None;
            }
            let root = disc.sqrt();
            let t = [-b - root, -b + root].into_iter().find(|&t| t > T_MIN)?;
            Some(Hit {
                t,
                normal: (origin + dir * t - c).normalized(),
            })
        }
        Shape::Cube => {
            let c = object.base() + Vec3::new(0.0, s, 0.0);
            let (o, d) = (to_local(object, origin - c), to_local(object, dir));
            let (mut t0, mut t1) = (f64::NEG_INFINITY, f64::INFINITY);
            let (mut axis0, mut axis1) = (0, 0);
            for (axis, (oa, da)) in [(o.x, d.x), (o.y, d.y), (o.z, d.z)].into_iter().enumerate() {
                if da.abs() < 1e-12 {
                    if oa.abs() > s {
                        return None;
                    }
                    continue;
                }
                let (a, b) = ((-s - oa) / da, (s - oa) / da);
                let (near, far) = if a < b { (a, b) } else { (b, a) };
                if near > t0 {
                    t0 = near;
                    axis0 = axis;
                }
                if far < t1 {
                    t1 = far;
                    axis1 = axis;
                }
            }
            if t0 > t1 {
                return None;
            }
            let (t, axis) = if t0 > T_MIN {
                (t0, axis0)
            } else if t1 > T_MIN {
                (t1, axis1)
            } else {
                return None;
            };
            let p = o + d * t;
            let component = [p.x, p.y, p.z][axis].signum();
            let mut n = [0.0; 3];
            n[axis] = component;
            Some(Hit {
                t,
                normal: to_world(object, Vec3::new(n[0], n[1], n[2])),
            })
        }
        Shape::Cylinder => {
            let base = object.base();
            let h = object.height();
            let mut best: Option<Hit> = None;
            let mut consider = |hit: Hit| {
                if hit.t > T_MIN && best.is_none_or(|b| hit.t < b.t) {
                    best = Some(hit);
                }
            };
            // Side: |(p - base)_xz| = s, 0 ≤ y ≤ h.
            let (ox, oz) = (origin.x - base.x, origin.z - base.z);
            let a = dir.x * dir.x + dir.z * dir.z;
            if a > 1e-12 {
                let b = ox * dir.x + oz * dir.z;
                let disc = b * b - a * (ox * ox + oz * oz - s * s);
                if disc >= 0.0 {
                    for t in [(-b - disc.sqrt()) / a, (-b + disc.sqrt()) / a] {
                        let p = origin + dir * t;
                        if (base.y..=base.y + h).contains(&p.y) {
                            let normal = Vec3::new(p.x - base.x, 0.0, p.z - base.z).normalized();
                            consider(Hit { t, normal });
                        }
                    }
                }
            }
            // Caps.
            if dir.y.abs() > 1e-12 {
                for (y, ny) in [(base.y + h, 1.0), (base.y, -1.0)] {
                    let t = (y - origin.y) / dir.y;
                    let p = origin + dir * t;
                    if (p.x - base.x).powi(2) + (p.z - base.z).powi(2) <= s * s {
                        consider(Hit {
                            t,
                            normal: Vec3::new(0.0, ny, 0.0),
                        });
                    }
                }
            }
            best
        }
    }
}

/// Signed distance from `p` to the surface of `object` (negative inside).
pub fn signed_distance(object: &Object, p: Vec3) -> f64 {
    let s = object.scale();
    match object.shape {
        Shape::Sphere => (p - (object.base() + Vec3::new(0.0, s, 0.0))).length() - s,
        Shape::Cube => {
            let q = to_local(object, p - (object.base() + Vec3::new(0.0, s, 0.0)));
            let d = Vec3::new(q.x.abs() - s, q.y.abs() - s, q.z.abs() - s);
            let outside = Vec3::new(d.x.max(0.0), d.y.max(0.0), d.z.max(0.0)).length();
            outside + d.x.max(d.y).max(d.z).min(0.0)
        }
        Shape::Cylinder => {
            let base = object.base();
            let h = object.height();
            let radial = ((p.x - base.x).powi(2) + (p.z - base.z).powi(2)).sqrt() - s;
            let vertical = (p.y - base.y - h / 2.0).abs() - h / 2.0;
            let outside = (radial.max(0.0).powi(2) + vertical.max(0.0).powi(2)).sqrt();
            outside + radial.max(vertical).min(0.0)
        }
    }
}

/// The outward normal of `object` at a surface point `p` (gradient of the signed distance).
pub fn surface_normal(object: &Object, p: Vec3) -> Vec3 {
    let e = 1e-5;
    let d = |v: Vec3| signed_distance(object, p + v) - signed_distance(object, p - v);
    Vec3::new(
        d(Vec3::new(e, 0.0, 0.0)),
        d(Vec3::new(0.0, e, 0.0)),
        d(Vec3::new(0.0, 0.0, e)),
    )
    .normalized()
}

/// World direction → the cube's frame (rotation by `-yaw` about `y`).
fn to_local(object: &Object, v: Vec3) -> Vec3 {
    let (sin, cos) = object.yaw.sin_cos();
    Vec3::new(cos * v.x - sin * v.z, v.y, sin * v.x + cos * v.z)
}

/// The cube's frame → world (rotation by `yaw` about `y`).
fn to_world(object: &Object, v: Vec3) -> Vec3 {
    let (sin, cos) = object.yaw.sin_cos();
    Vec3::new(cos * v.x + sin * v.z, v.y, -sin * v.x + cos * v.z)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(shape: Shape) -> Object {
        Object {
            shape,
            color: 0,
            size: 1,
            position: [0.3, 0.0, -0.2],
            yaw: 0.4,
        }
    }

    #[test]
    fn hits_lie_on_the_surface_with_the_surface_normal() {
        let origin = Vec3::new(4.0, 3.0, 5.0);
        for shape in [Shape::Sphere, Shape::Cube, Shape::Cylinder] {
            let o = object(shape);
            let (mut hits, mut disagree) = (0, 0);
            for i in 0..40 {
                for j in 0..40 {
                    let aim = Vec3::new(
                        0.3 + (i as f64 - 20.0) * 0.05,
                        0.6 + (j as f64 - 20.0) * 0.05,
                        -0.2,
                    );
                    let dir = (aim - origin).normalized();
                    let Some(hit) = intersect(&o, origin, dir) else {
                        continue;
                    };
                    hits += 1;
                    let p = origin + dir * hit.t;
                    assert!(signed_distance(&o, p).abs() < 1e-6, "{shape:?}");
                    assert!(hit.normal.dot(dir) < 0.0, "{shape:?} faces the ray");
                    // Edges have ambiguous normals; faces agree.
                    if surface_normal(&o, p).dot(hit.normal) < 0.999 {
                        disagree += 1;
                    }
                }
            }
            assert!(disagree * 20 < hits, "{shape:?}: {disagree} of {hits}");
            assert!(hits > 100, "{shape:?}: {hits}");
        }
    }
}
