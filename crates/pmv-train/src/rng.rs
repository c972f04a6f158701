//! Counter-based randomness: every random draw of a run derives from the seed and where
//! it is used (epoch, step, sample position, purpose), never from a running state.
//!
//! That makes a run reproducible whatever the number of loader threads, and a resumed
//! run draw exactly what the uninterrupted one would have drawn, with nothing to save
//! but the seed. It owns no libtorch state; model initialisation seeds libtorch once.

/// What a stream of draws is for; keeps streams of one step apart.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Purpose {
    ShardOrder = 1,
    ShuffleBuffer = 2,
    Augment = 3,
    Mix = 4,
    Noise = 5,
    Mask = 6,
}

/// xoshiro256++ seeded through SplitMix64 from a key.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream for `purpose` at coordinates `a`, `b` of a run seeded with `seed`.
    pub fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> Rng {
        let mut k = splitmix(seed ^ splitmix(purpose as u64));
        k = splitmix(k ^ a);
        k = splitmix(k ^ b.rotate_left(29));
        let mut s = [0u64; 4];
        for (i, x) in s.iter_mut().enumerate() {
            k = splitmix(k ^ i as u64);
            *x = k;
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n); `n` > 0.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        // Lemire's multiply-shift; the bias for n far below 2^64 is negligible.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, 1) (Marsaglia and Tsang; shape < 1 through the boost u^(1/shape)).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.f64();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = 1.0 - self.f64();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y == 0.0 { 0.5 } else { x / (x + y) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .scan(Rng::stream(1, Purpose::Augment, 2, 3), |r, _| {
                Some(r.next_u64())
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Rng::stream(1, Purpose::Augment, 2, 3), |r, _| {
                Some(r.next_u64())
            })
            .collect();
        assert_eq!(a, b);
        let mut c = Rng::stream(1, Purpose::Augment, 3, 2);
        assert_ne!(a[0], c.next_u64());
        let mut d = Rng::stream(1, Purpose::Mix, 2, 3);
        assert_ne!(a[0], d.next_u64());
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut r = Rng::stream(9, Purpose::Noise, 0, 0);
        let n = 20_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        assert!((mean(&mut || r.f64()) - 0.5).abs() < 0.01);
        assert!(mean(&mut || r.normal()).abs() < 0.03);
        assert!((mean(&mut || r.gamma(2.0)) - 2.0).abs() < 0.06);
        assert!((mean(&mut || r.gamma(0.4)) - 0.4).abs() < 0.03);
        // Beta(0.8, 0.8) has mean 1/2 and lies in [0, 1].
        let mut all_in = true;
        let m = mean(&mut || {
            let b = r.beta(0.8, 0.8);
            all_in &= (0.0..=1.0).contains(&b);
            b
        });
        assert!(all_in && (m - 0.5).abs() < 0.02, "{m}");
        let mut v: Vec<usize> = (0..50).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
