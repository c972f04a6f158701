//! The moving average of a run's weights (`--model-ema`, timm's `ModelEmaV2`): a
//! second copy of the model on the training device that follows the trained one by
//! `ema = d * ema + (1 - d) * model` after every optimiser step, for every parameter and
//! every floating buffer (BatchNorm running statistics); integer buffers are copied.
//!
//! Owns that copy, its update and loading it back from a checkpoint. It never decides
//! when to update, validate or save (the step loop, validation and checkpoints do).

use tch::{Tensor, nn};

use crate::device::Precision;
use crate::error::TrainError;
use crate::models::{ModelSpec, Net};

/// The averaged model: its own variables and network, paired by name with the trained
/// model's variables.
pub(crate) struct ModelEma {
    pub(crate) decay: f64,
    pub(crate) net: Net,
    pairs: Vec<(String, Tensor, Tensor)>,
}

impl ModelEma {
    /// A copy of `model` (built from `spec` on the same device), starting equal to it.
    pub(crate) fn new(
        model: &nn::VarStore,
        spec: &ModelSpec,
        precision: Precision,
        decay: f64,
    ) -> Result<ModelEma, TrainError> {
        let vs = nn::VarStore::new(model.device());
        let net = spec.build(&vs.root(), precision)?;
        let pairs = pair(&vs, model)?;
        let ema = ModelEma { decay, net, pairs };
        ema.copy_from_model();
        Ok(ema)
    }

    /// Sets the average to the model's current values.
    pub(crate) fn copy_from_model(&self) {
        tch::no_grad(|| {
            for (_, e, m) in &self.pairs {
                let mut e = e.shallow_clone();
                e.copy_(m);
            }
        });
    }

    /// One step of the average, after an optimiser step.
    pub(crate) fn update(&self) {
        update(&self.pairs, self.decay);
    }

    /// The averaged variables by name (the model's names).
    pub(crate) fn weights(&self) -> Vec<(String, Tensor)> {
        self.pairs
            .iter()
            .map(|(n, e, _)| (n.clone(), e.shallow_clone()))
            .collect()
    }

    /// Loads the average from `tensors` (a checkpoint's), every variable required.
    pub(crate) fn load(
        &self,
        tensors: Vec<(String, Tensor)>,
        from: &str,
    ) -> Result<(), TrainError> {
        let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        tch::no_grad(|| {
            for (name, e, _) in &self.pairs {
                let t = by_name.remove(name).ok_or_else(|| {
                    TrainError::Invalid(format!("{from}: no {name} in the moving average"))
                })?;
                if t.size() != e.size() {
                    return Err(TrainError::Invalid(format!(
                        "{from}: {name} has shape {:?}, the model {:?}",
                        t.size(),
                        e.size()
                    )));
                }
                let mut e = e.shallow_clone();
                e.copy_(&t.to_device(e.device()).to_kind(e.kind()));
            }
            Ok(())
        })
    }
}

/// The variables of `ema` and `model`, paired by name (both built from one spec).
fn pair(
    ema: &nn::VarStore,
    model: &nn::VarStore,
) -> Result<Vec<(String, Tensor, Tensor)>, TrainError> {
    let model_vars = model.variables();
    let mut pairs: Vec<(String, Tensor, Tensor)> = ema
        .variables()
        .into_iter()
        .map(|(name, e)| {
            let m = model_vars.get(&name).ok_or_else(|| {
                TrainError::Invalid(format!("the moving average has {name}, the model has not"))
            })?;
            Ok((name, e.set_requires_grad(false), m.shallow_clone()))
        })
        .collect::<Result<_, TrainError>>()?;
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs)
}

/// `ema = d * ema + (1 - d) * model` for floating tensors (as timm computes it: both
/// products, then their sum), a copy for the others; no gradients.
fn update(pairs: &[(String, Tensor, Tensor)], decay: f64) {
    tch::no_grad(|| {
        for (_, e, m) in pairs {
            let mut e = e.shallow_clone();
            if e.is_floating_point() {
                let next = &e * decay + m * (1.0 - decay);
                e.copy_(&next);
            } else {
                e.copy_(m);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn the_average_after_n_steps_is_the_closed_form() {
        // A toy model: a linear layer and a floating buffer; each "step" sets new
        // parameter values, as an optimiser step would.
        tch::manual_seed(5);
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "lin", 4, 3, Default::default());
            let buf = (vs.root() / "bn").zeros_no_train("running_mean", &[3]);
            (vs, lin, buf)
        };
        let (model, lin, buf) = make();
        let (ema_vs, _, _) = make();
        let pairs = pair(&ema_vs, &model).unwrap();
        assert_eq!(pairs.len(), 3);
        let copy = |pairs: &[(String, Tensor, Tensor)]| {
            tch::no_grad(|| {
                for (_, e, m) in pairs {
                    e.shallow_clone().copy_(m);
                }
            })
        };
        copy(&pairs);
        let d = 0.9;
        let n = 12;
        let snapshot = || -> Vec<Tensor> {
            [&lin.ws, lin.bs.as_ref().unwrap(), &buf]
                .iter()
                .map(|t| t.to_kind(Kind::Double).detach().copy())
                .collect()
        };
        let p0 = snapshot();
        let mut steps = vec![];
        for _ in 0..n {
            tch::no_grad(|| {
                for t in [&lin.ws, lin.bs.as_ref().unwrap(), &buf] {
                    let mut t = t.shallow_clone();
                    let _ = t.g_add_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.5));
                }
            });
            steps.push(snapshot());
            update(&pairs, d);
        }
        // Closed form: d^N p0 + (1 - d) sum_i d^(N - i) p_i, in f64.
        for (j, name) in ["lin.weight", "lin.bias", "bn.running_mean"]
            .iter()
            .enumerate()
        {
            let mut want = &p0[j] * d.powi(n);
            for (i, p) in steps.iter().enumerate() {
                want += &p[j] * ((1.0 - d) * d.powi(n - 1 - i as i32));
            }
            let got = pairs
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap()
                .1
                .to_kind(Kind::Double);
            let err = (&got - &want).abs().max().double_value(&[]);
            // f32 storage: 12 rounded updates of values of order 1.
            assert!(err < 1e-5, "{name}: max error {err}");
        }
        // The average never writes to the model: it still holds the last values set.
        let last = &steps[n as usize - 1];
        assert!(lin.ws.to_kind(Kind::Double).equal(&last[0]));
        assert!(!pairs[0].1.equal(&pairs[0].2));
    }

    #[test]
    fn integer_buffers_are_copied() {
        let e = Tensor::from_slice(&[1i64, 2]);
        let m = Tensor::from_slice(&[7i64, 9]);
        let f = Tensor::from_slice(&[1.0f32]);
        let g = Tensor::from_slice(&[3.0f32]);
        let pairs = vec![
            ("n".to_owned(), e.shallow_clone(), m),
            ("f".to_owned(), f.shallow_clone(), g),
        ];
        update(&pairs, 0.75);
        assert_eq!(Vec::<i64>::try_from(&e).unwrap(), [7, 9]);
        assert_eq!(Vec::<f32>::try_from(&f).unwrap(), [1.5]);
    }
}
