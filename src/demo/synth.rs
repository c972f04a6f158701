//! The demo's synthetic dataset: short portrait videos whose classes can only be told
//! apart by motion (direction, rotation sense, speed) as well as by appearance.
//!
//! Owns the class definitions and the renderer. Every video is a pure function of its
//! class and seed, so the same demo gives the same videos on every machine. Colours,
//! sizes, start positions, speeds and background clutter are random per video, and no
//! single frame tells the paired classes apart: a model must look at several frames.
//! It never touches files; the demo encodes what this renders.

/// What the object looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Square,
    Triangle,
    Bar,
    Disc,
}

/// How it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Motion {
    Right,
    Left,
    Clockwise,
    CounterClockwise,
    DownSlow,
    DownFast,
}

/// One demo class.
#[derive(Debug, Clone, Copy)]
pub struct DemoClass {
    pub name: &'static str,
    /// What tells it apart from its closest neighbour class.
    pub contrast: &'static str,
    shape: Shape,
    motion: Motion,
}

/// The classes, in label order. Pairs differ in one thing only: 0/1 and 2/3 in
/// direction, 0/2 and 1/3 in appearance, 4/5 in rotation sense, 6/7 in speed.
pub const CLASSES: [DemoClass; 8] = [
    DemoClass {
        name: "square-right",
        contrast: "direction (vs square-left), shape (vs triangle-right)",
        shape: Shape::Square,
        motion: Motion::Right,
    },
    DemoClass {
        name: "square-left",
        contrast: "direction (vs square-right), shape (vs triangle-left)",
        shape: Shape::Square,
        motion: Motion::Left,
    },
    DemoClass {
        name: "triangle-right",
        contrast: "direction (vs triangle-left), shape (vs square-right)",
        shape: Shape::Triangle,
        motion: Motion::Right,
    },
    DemoClass {
        name: "triangle-left",
        contrast: "direction (vs triangle-right), shape (vs square-left)",
        shape: Shape::Triangle,
        motion: Motion::Left,
    },
    DemoClass {
        name: "bar-clockwise",
        contrast: "rotation sense (vs bar-counterclockwise)",
        shape: Shape::Bar,
        motion: Motion::Clockwise,
    },
    DemoClass {
        name: "bar-counterclockwise",
        contrast: "rotation sense (vs bar-clockwise)",
        shape: Shape::Bar,
        motion: Motion::CounterClockwise,
    },
    DemoClass {
        name: "disc-falling-slow",
        contrast: "speed (vs disc-falling-fast)",
        shape: Shape::Disc,
        motion: Motion::DownSlow,
    },
    DemoClass {
        name: "disc-falling-fast",
        contrast: "speed (vs disc-falling-slow)",
        shape: Shape::Disc,
        motion: Motion::DownFast,
    },
];

/// SplitMix64: a small, well-mixed generator; enough for rendering and fully
/// reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// A saturated colour of random hue.
fn vivid(rng: &mut Rng) -> [f32; 3] {
    let h = rng.unit() * 6.0;
    let (s, v) = (rng.range(0.6, 1.0), rng.range(0.7, 1.0));
    let f = h - h.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match h as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|c| c * 255.0)
}

/// A faint static blob of the background.
#[derive(Debug, Clone, Copy)]
struct Blob {
    x: f32,
    y: f32,
    r: f32,
    colour: [f32; 3],
}

/// Everything random about one video, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Scene {
    class: DemoClass,
    width: usize,
    height: usize,
    top: [f32; 3],
    bottom: [f32; 3],
    blobs: Vec<Blob>,
    colour: [f32; 3],
    /// Half the object's size, in pixels.
    size: f32,
    x0: f32,
    y0: f32,
    angle0: f32,
    /// Pixels (or radians for rotation) per frame.
    speed: f32,
    noise_seed: u64,
}

impl Scene {
    /// The scene of a `width`×`height` video of class `class` (an index into
    /// [`CLASSES`]) drawn from `seed`.
    pub fn new(class: usize, seed: u64, width: usize, height: usize) -> Scene {
        let class = CLASSES[class];
        let mut rng = Rng::new(seed ^ 0x5EED_0FDE_u64.rotate_left(17));
        let (w, h) = (width as f32, height as f32);
        // A dim colour of random hue.
        let dim = |rng: &mut Rng| {
            let c = vivid(rng);
            let k = rng.range(0.15, 0.35);
            c.map(|v| v * k)
        };
        let top = dim(&mut rng);
        let bottom = dim(&mut rng);
        let blobs = (0..3)
            .map(|_| Blob {
                x: rng.range(0.0, w),
                y: rng.range(0.0, h),
                r: rng.range(0.06, 0.16) * w,
                colour: dim(&mut rng),
            })
            .collect();
        let colour = vivid(&mut rng);
        let size = rng.range(0.10, 0.15) * w;
        // Speeds: horizontal movers cross about half the width in a second; slow and
        // fast fallers differ by a factor of three or more, with no overlap.
        let speed = match class.motion {
            Motion::Right | Motion::Left => rng.range(0.012, 0.02) * w,
            Motion::Clockwise | Motion::CounterClockwise => rng.range(0.06, 0.12),
            Motion::DownSlow => rng.range(0.004, 0.008) * h,
            Motion::DownFast => rng.range(0.022, 0.032) * h,
        };
        Scene {
            class,
            width,
            height,
            top,
            bottom,
            blobs,
            colour,
            size,
            x0: rng.range(0.0, w),
            y0: rng.range(0.2 * h, 0.8 * h),
            angle0: rng.range(0.0, std::f32::consts::PI),
            speed,
            noise_seed: rng.next_u64(),
        }
    }

    /// Renders frame `t` as packed RGB into `out` (`width * height * 3` bytes).
    pub fn render(&self, t: usize, out: &mut [u8]) {
        let (w, h) = (self.width, self.height);
        assert_eq!(out.len(), w * h * 3, "frame buffer size");
        let (wf, hf) = (w as f32, h as f32);
        let t = t as f32;
        let (mut cx, mut cy, mut angle) = (self.x0, self.y0, self.angle0);
        match self.class.motion {
            Motion::Right => cx += self.speed * t,
            Motion::Left => cx -= self.speed * t,
            // Image y points down, so a growing angle turns clockwise on screen.
            Motion::Clockwise => angle += self.speed * t,
            Motion::CounterClockwise => angle -= self.speed * t,
            Motion::DownSlow | Motion::DownFast => cy += self.speed * t,
        }
        // The scene wraps around (a torus), so movers never stop at an edge.
        cx = cx.rem_euclid(wf);
        cy = cy.rem_euclid(hf);
        if matches!(self.class.shape, Shape::Bar) {
            // The rotating bar stays in the middle third.
            cx = wf * 0.5 + (self.x0 / wf - 0.5) * wf * 0.3;
        }
        let (sin, cos) = angle.sin_cos();
        let mut noise = Rng::new(self.noise_seed ^ (t as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        for y in 0..h {
            let fy = y as f32 + 0.5;
            let v = fy / hf;
            let base: [f32; 3] =
                std::array::from_fn(|c| self.top[c] * (1.0 - v) + self.bottom[c] * v);
            for x in 0..w {
                let fx = x as f32 + 0.5;
                let mut px = base;
                for b in &self.blobs {
                    let d = ((fx - b.x).powi(2) + (fy - b.y).powi(2)).sqrt();
                    let a = coverage(b.r - d);
                    for (p, c) in px.iter_mut().zip(b.colour) {
                        *p += a * c;
                    }
                }
                // Toroidal offsets to the object's centre.
                let dx = wrap(fx - cx, wf);
                let dy = wrap(fy - cy, hf);
                let a = self.object_coverage(dx, dy, sin, cos);
                let n = (noise.unit() - 0.5) * 16.0;
                let o = (y * w + x) * 3;
                for c in 0..3 {
                    let value = px[c] * (1.0 - a) + self.colour[c] * a + n;
                    out[o + c] = value.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    /// How much of the pixel at offset (dx, dy) from the centre the object covers
    /// (anti-aliased over about one pixel).
    fn object_coverage(&self, dx: f32, dy: f32, sin: f32, cos: f32) -> f32 {
        let s = self.size;
        match self.class.shape {
            Shape::Square => coverage(s - dx.abs().max(dy.abs())),
            Shape::Disc => coverage(s - (dx * dx + dy * dy).sqrt()),
            Shape::Triangle => {
                // Apex (0, -s), base from (-s, s) to (s, s): inside the base and both
                // slanted edges (signed distances, positive inside).
                let k = 1.0 / 5f32.sqrt();
                let left = ((dy + s) + 2.0 * dx) * k;
                let right = ((dy + s) - 2.0 * dx) * k;
                coverage((s - dy).min(left).min(right))
            }
            Shape::Bar => {
                // A long thin rectangle turned by the current angle.
                let u = dx * cos + dy * sin;
                let v = -dx * sin + dy * cos;
                coverage((2.2 * s - u.abs()).min(0.35 * s - v.abs()))
            }
        }
    }
}

/// Signed distance inside an edge (pixels) to coverage in [0, 1].
fn coverage(inside: f32) -> f32 {
    (inside + 0.5).clamp(0.0, 1.0)
}

/// The shortest signed offset on a circle of length `len`.
fn wrap(d: f32, len: f32) -> f32 {
    let d = d.rem_euclid(len);
    if d > len * 0.5 { d - len } else { d }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &Scene, t: usize) -> Vec<u8> {
        let mut out = vec![0u8; s.width * s.height * 3];
        s.render(t, &mut out);
        out
    }

    /// The centroid of pixels close to the object's colour.
    fn centroid(s: &Scene, f: &[u8]) -> (f32, f32) {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for y in 0..s.height {
            for x in 0..s.width {
                let o = (y * s.width + x) * 3;
                let d: f32 = (0..3).map(|c| (f[o + c] as f32 - s.colour[c]).abs()).sum();
                if d < 30.0 {
                    sx += x as f32;
                    sy += y as f32;
                    n += 1.0;
                }
            }
        }
        assert!(n > 10.0, "object not visible");
        (sx / n, sy / n)
    }

    #[test]
    fn rendering_is_deterministic_and_seeds_differ() {
        let a = Scene::new(3, 42, 96, 160);
        let b = Scene::new(3, 42, 96, 160);
        assert_eq!(frame(&a, 7), frame(&b, 7));
        assert_ne!(frame(&a, 7), frame(&Scene::new(3, 43, 96, 160), 7));
        assert_ne!(frame(&a, 7), frame(&a, 8), "the noise changes per frame");
    }

    #[test]
    fn motion_goes_the_way_the_class_says() {
        // Seeds whose objects start away from the wrap seam.
        let mut checked = 0;
        for seed in 0..40u64 {
            let right = Scene::new(0, seed, 96, 160);
            let left = Scene::new(1, seed, 96, 160);
            if right.x0 < 30.0 || right.x0 > 50.0 || left.x0 < 40.0 || left.x0 > 60.0 {
                continue;
            }
            let (r0, _) = centroid(&right, &frame(&right, 0));
            let (r1, _) = centroid(&right, &frame(&right, 8));
            assert!(r1 > r0 + 5.0, "square-right moved from {r0} to {r1}");
            let (l0, _) = centroid(&left, &frame(&left, 0));
            let (l1, _) = centroid(&left, &frame(&left, 8));
            assert!(l1 < l0 - 5.0, "square-left moved from {l0} to {l1}");
            checked += 1;
        }
        assert!(
            checked >= 2,
            "only {checked} seeds started away from the seam"
        );
        let slow = Scene::new(6, 1, 96, 160);
        let fast = Scene::new(7, 1, 96, 160);
        assert!(fast.speed > 2.5 * slow.speed);
    }

    #[test]
    fn every_class_draws_its_object() {
        for class in 0..CLASSES.len() {
            let s = Scene::new(class, 9, 96, 160);
            centroid(&s, &frame(&s, 0));
        }
    }
}
