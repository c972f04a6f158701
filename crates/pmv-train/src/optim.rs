//! AdamW over one flat buffer, the learning-rate schedule, and gradient clipping.
//!
//! Every trainable parameter becomes a view into one contiguous fp32 buffer, and after
//! the first backward pass every gradient a view into a second one (autograd then
//! accumulates into it in place). Parameters that share a rule (weight decay on or
//! off, layer-decay lr scale) are laid out contiguously, so an update is eight
//! whole-buffer passes plus two small kernels per rule, whatever the number of
//! parameters, instead of several per parameter. Moments are exported per parameter
//! name so a checkpoint survives any change of layout. No host synchronisation happens
//! here: clipping computes its factor on the device.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// AdamW hyper-parameters (or SGD's, when `sgd` is set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// SGD with momentum instead: p ← p − lr·s·d, d the (Nesterov) momentum of
    /// g + wd·p, as `torch.optim.SGD` with dampening 0. The moment buffer holds the
    /// momentum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgd: Option<SgdConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub momentum: f64,
    pub nesterov: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
            sgd: None,
        }
    }
}

/// How one parameter is optimised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamRule {
    pub lr_scale: f64,
    pub decay: bool,
}

struct Param {
    name: String,
    var: Tensor,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
    /// The gradient is a view into the flat gradient buffer.
    bound: bool,
}

/// A contiguous range of the flat buffers whose parameters share a rule.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: i64,
    len: i64,
    rule: ParamRule,
}

pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    groups: Vec<Group>,
    flat: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    /// Optimiser steps taken.
    pub step: u64,
}

impl AdamW {
    /// Takes over `vars` (name, trainable tensor): their data moves into one buffer on
    /// `device`, laid out so that parameters with the same rule are contiguous.
    pub fn new(
        vars: Vec<(String, Tensor)>,
        device: Device,
        cfg: AdamWConfig,
        rule: impl Fn(&str, &[i64]) -> ParamRule,
    ) -> AdamW {
        let mut ruled: Vec<(ParamRule, String, Tensor)> = vars
            .into_iter()
            .map(|(n, t)| (rule(&n, &t.size()), n, t))
            .collect();
        // Decayed first, then by lr scale; the given order within a group.
        ruled.sort_by(|a, b| {
            b.0.decay
                .cmp(&a.0.decay)
                .then(a.0.lr_scale.total_cmp(&b.0.lr_scale))
        });
        let total: i64 = ruled.iter().map(|(_, _, v)| v.numel() as i64).sum();
        let opts = (Kind::Float, device);
        let flat = Tensor::zeros([total], opts);
        let grad = Tensor::zeros([total], opts);
        let mut params = Vec::with_capacity(ruled.len());
        let mut groups: Vec<Group> = vec![];
        let mut offset = 0;
        tch::no_grad(|| {
            for (r, name, mut var) in ruled {
                let shape = var.size();
                let numel = var.numel() as i64;
                let mut view = flat.narrow(0, offset, numel).view(shape.as_slice());
                view.copy_(&var);
                var.set_data(&view);
                match groups.last_mut() {
                    Some(g) if g.rule == r => g.len += numel,
                    _ => groups.push(Group {
                        start: offset,
                        len: numel,
                        rule: r,
                    }),
                }
                params.push(Param {
                    name,
                    var,
                    offset,
                    numel,
                    shape,
                    bound: false,
                });
                offset += numel;
            }
        });
        AdamW {
            cfg,
            params,
            groups,
            m: flat.zeros_like(),
            v: flat.zeros_like(),
            flat,
            grad,
            step: 0,
        }
    }

    /// Makes every gradient autograd created a view of the flat gradient buffer. Cheap
    /// once all are bound (host-side pointer checks only); call after each backward.
    pub fn bind_grads(&mut self) {
        if self.params.iter().all(|p| p.bound) {
            return;
        }
        tch::no_grad(|| {
            for p in self.params.iter_mut().filter(|p| !p.bound) {
                let mut g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let mut view = self
                    .grad
                    .narrow(0, p.offset, p.numel)
                    .view(p.shape.as_slice());
                if g.data_ptr() != view.data_ptr() {
                    view.copy_(&g);
                    g.set_data(&view);
                }
                p.bound = true;
            }
        });
    }

    /// Zeroes the gradients (one kernel once they are bound).
    pub fn zero_grad(&mut self) {
        let _ = self.grad.zero_();
        for p in self.params.iter_mut().filter(|p| !p.bound) {
            p.var.zero_grad();
        }
    }

    /// Every trainable parameter, as the one flat buffer they are views of (what
    /// data-parallel ranks copy from rank 0 at the start).
    pub fn params_mut(&mut self) -> &mut Tensor {
        &mut self.flat
    }

    /// Every gradient, as the one flat buffer they are views of once bound (what
    /// data-parallel ranks average after each backward pass).
    pub fn grads_mut(&mut self) -> &mut Tensor {
        &mut self.grad
    }

    /// The global L2 norm of the gradients, on the device.
    pub fn grad_norm(&self) -> Tensor {
        self.grad.norm()
    }

    /// Scales the gradients so their global norm is at most `max_norm`; returns the
    /// norm before clipping (on the device, nothing waits for it).
    pub fn clip(&mut self, max_norm: f64) -> Tensor {
        let norm = self.grad_norm();
        let coef = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = self.grad.g_mul_(&coef);
        norm
    }

    /// One AdamW update at learning rate `lr` (scaled per parameter group):
    /// p ← p (1 − lr·s·wd) − lr·s · m̂ / (√v̂ + ε). Eight passes over the buffers, with
    /// the bias corrections folded into ε and the step size.
    pub fn update(&mut self, lr: f64) {
        if let Some(sgd) = self.cfg.sgd {
            return self.sgd_update(lr, sgd);
        }
        let c = self.cfg;
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        tch::no_grad(|| {
            for g in &self.groups {
                let f = 1.0 - lr * g.rule.lr_scale * c.weight_decay;
                if g.rule.decay && f != 1.0 {
                    let _ = self.flat.narrow(0, g.start, g.len).g_mul_scalar_(f);
                }
            }
            let _ = self.m.lerp_(&self.grad, 1.0 - c.beta1);
            let _ = self.v.lerp_(&self.grad.square(), 1.0 - c.beta2);
            // √v̂ + ε = (√v + ε√bc2) / √bc2
            let mut denom = self.v.sqrt();
            let _ = denom.g_add_scalar_(c.eps * bc2.sqrt());
            for g in &self.groups {
                let step_size = lr * g.rule.lr_scale * bc2.sqrt() / bc1;
                if step_size == 0.0 {
                    continue;
                }
                let mut d = denom.narrow(0, g.start, g.len);
                let _ = d.g_mul_scalar_(-1.0 / step_size);
                let _ = self
                    .flat
                    .narrow(0, g.start, g.len)
                    .addcdiv_(&self.m.narrow(0, g.start, g.len), &d);
            }
        });
    }

    /// One SGD update: weight decay into the gradient (decayed groups), the momentum
    /// buffer m ← μ·m + g, then p ← p − lr·s·(g + μ·m) (Nesterov) or p − lr·s·m.
    fn sgd_update(&mut self, lr: f64, sgd: SgdConfig) {
        let wd = self.cfg.weight_decay;
        self.step += 1;
        tch::no_grad(|| {
            if wd != 0.0 {
                for g in self.groups.iter().filter(|g| g.rule.decay) {
                    let _ = self
                        .grad
                        .narrow(0, g.start, g.len)
                        .g_add_(&(self.flat.narrow(0, g.start, g.len) * wd));
                }
            }
            let _ = self.m.g_mul_scalar_(sgd.momentum);
            let _ = self.m.g_add_(&self.grad);
            let d = if sgd.nesterov {
                &self.grad + &self.m * sgd.momentum
            } else {
                self.m.shallow_clone()
            };
            for g in &self.groups {
                let step = lr * g.rule.lr_scale;
                if step == 0.0 {
                    continue;
                }
                let _ = self
                    .flat
                    .narrow(0, g.start, g.len)
                    .g_add_(&(d.narrow(0, g.start, g.len) * -step));
            }
        });
    }

    /// The buffers a checkpoint keeps, by prefix.
    fn buffers(&self) -> Vec<(&'static str, &Tensor)> {
        if self.cfg.sgd.is_some() {
            vec![("momentum_buffer", &self.m)]
        } else {
            vec![("exp_avg", &self.m), ("exp_avg_sq", &self.v)]
        }
    }

    /// The moments, per parameter: `exp_avg.<name>`, `exp_avg_sq.<name>` (SGD:
    /// `momentum_buffer.<name>`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for p in &self.params {
            for (prefix, buf) in self.buffers() {
                let view = buf.narrow(0, p.offset, p.numel).view(p.shape.as_slice());
                out.push((format!("{prefix}.{}", p.name), view));
            }
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, step: u64) -> Result<(), String> {
        let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut problems = vec![];
        tch::no_grad(|| {
            for p in &self.params {
                for (prefix, buf) in self.buffers() {
                    let key = format!("{prefix}.{}", p.name);
                    match by_name.remove(&key) {
                        Some(t) if t.size() == p.shape => {
                            let mut view =
                                buf.narrow(0, p.offset, p.numel).view(p.shape.as_slice());
                            view.copy_(&t);
                        }
                        Some(t) => problems.push(format!(
                            "{key}: shape {:?}, expected {:?}",
                            t.size(),
                            p.shape
                        )),
                        None => problems.push(format!("{key}: missing")),
                    }
                }
            }
        });
        problems.extend(by_name.into_keys().map(|k| format!("{k}: unexpected")));
        if !problems.is_empty() {
            problems.sort();
            problems.truncate(20);
            return Err(problems.join("; "));
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up from `warmup_lr` to `lr`, then half a cosine down to `min_lr`; per
/// optimiser step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let f = step as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.lr - self.warmup_lr) * f;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let f = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (PI * f).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            lr: 1.0,
            min_lr: 0.0,
            warmup_lr: 0.0,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(5) - 0.5).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.5).abs() < 1e-12);
        assert!(s.at(110).abs() < 1e-12);
        assert!(s.at(500).abs() < 1e-12);
    }

    /// The flat AdamW equals the textbook per-parameter AdamW, parameters and their
    /// gradients stay views of the flat buffers, and clipping bounds the norm.
    #[test]
    fn flat_sgd_matches_torch_sgd_with_nesterov() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.randn("w", &[3, 4], 0.0, 1.0);
        let b = root.randn("b", &[3], 0.0, 1.0);
        let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            sgd: Some(SgdConfig {
                momentum: 0.9,
                nesterov: true,
            }),
            ..Default::default()
        };
        let (mut rw, mut rb) = (w.detach().copy(), b.detach().copy());
        let (mut mw, mut mb) = (rw.zeros_like(), rb.zeros_like());
        let vars = vec![
            ("w".to_owned(), w.shallow_clone()),
            ("b".to_owned(), b.shallow_clone()),
        ];
        let mut opt = AdamW::new(vars, Device::Cpu, cfg, |name, _| ParamRule {
            lr_scale: 1.0,
            decay: name == "w",
        });
        for _ in 0..4 {
            let loss = x.linear(&w, Some(&b)).square().sum(Kind::Float);
            loss.backward();
            opt.bind_grads();
            let (gw, gb) = (w.grad().detach().copy(), b.grad().detach().copy());
            opt.update(0.05);
            opt.zero_grad();
            tch::no_grad(|| {
                // torch.optim.SGD(momentum=0.9, nesterov=True, weight_decay on w only)
                let gw = gw + &rw * 0.01;
                mw = &mw * 0.9 + &gw;
                mb = &mb * 0.9 + &gb;
                rw = &rw - (gw + &mw * 0.9) * 0.05;
                rb = &rb - (gb + &mb * 0.9) * 0.05;
            });
        }
        assert!((&w - &rw).abs().max().double_value(&[]) < 1e-5);
        assert!((&b - &rb).abs().max().double_value(&[]) < 1e-5);
        let names: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| n.starts_with("momentum_buffer.")));
    }

    #[test]
    fn flat_adamw_matches_the_reference() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.randn("w", &[3, 4], 0.0, 1.0);
        let b = root.randn("b", &[3], 0.0, 1.0);
        let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        // Reference copies.
        let mut rw = w.detach().copy();
        let mut rb = b.detach().copy();
        let (mut mw, mut vw) = (rw.zeros_like(), rw.zeros_like());
        let (mut mb, mut vb) = (rb.zeros_like(), rb.zeros_like());
        let vars = vec![
            ("w".to_owned(), w.shallow_clone()),
            ("b".to_owned(), b.shallow_clone()),
        ];
        let mut opt = AdamW::new(vars, Device::Cpu, cfg, |n, _| ParamRule {
            lr_scale: if n == "b" { 0.5 } else { 1.0 },
            decay: n == "w",
        });
        let loss_of = |w: &Tensor, b: &Tensor| (x.matmul(&w.tr()) + b).square().sum(Kind::Float);
        for step in 1..=4 {
            let lr = 0.01 * step as f64;
            opt.zero_grad();
            loss_of(&w, &b).backward();
            opt.bind_grads();
            assert_eq!(
                w.grad().data_ptr(),
                opt.grad.data_ptr(),
                "gradient is a view"
            );
            opt.update(lr);
            // Reference step.
            let rw_ = rw.detach().set_requires_grad(true);
            let rb_ = rb.detach().set_requires_grad(true);
            loss_of(&rw_, &rb_).backward();
            let (gw, gb) = (rw_.grad(), rb_.grad());
            let t = step;
            let bc1 = 1.0 - 0.9f64.powi(t);
            let bc2 = 1.0 - 0.999f64.powi(t);
            mw = &mw * 0.9 + &gw * 0.1;
            vw = &vw * 0.999 + gw.square() * 0.001;
            mb = &mb * 0.9 + &gb * 0.1;
            vb = &vb * 0.999 + gb.square() * 0.001;
            rw = &rw * (1.0 - lr * 0.1) - (&mw / bc1) / ((&vw / bc2).sqrt() + 1e-8) * lr;
            rb = &rb - (&mb / bc1) / ((&vb / bc2).sqrt() + 1e-8) * (lr * 0.5);
            let dw = (&w.detach() - &rw).abs().max().double_value(&[]);
            let db = (&b.detach() - &rb).abs().max().double_value(&[]);
            assert!(dw < 1e-6 && db < 1e-6, "step {step}: {dw} {db}");
        }
        assert_eq!(
            w.data_ptr(),
            opt.flat.data_ptr(),
            "parameters live in the flat buffer"
        );
        // Moments round-trip by name.
        let state: Vec<(String, Tensor)> = opt
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        assert_eq!(state.len(), 4);
        let m_before = opt.m.copy();
        let _ = opt.m.zero_();
        opt.load_state(state, 4).unwrap();
        assert!(opt.m.equal(&m_before));
        assert!(opt.load_state(vec![], 4).unwrap_err().contains("missing"));
        // Clipping.
        opt.zero_grad();
        (loss_of(&w, &b) * 1000.0).backward();
        opt.bind_grads();
        let before = opt.clip(1.0).double_value(&[]);
        assert!(before > 1.0);
        assert!((opt.grad_norm().double_value(&[]) - 1.0).abs() < 1e-4);
    }
}
