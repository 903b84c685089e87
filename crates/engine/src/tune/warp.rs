//! A monotone warping of objective values before the Gaussian process sees them: the
//! Yeo-Johnson power transform (Yeo & Johnson 2000), with its exponent fitted by maximum
//! likelihood, as in HEBO (Cowen-Rivers et al. 2022) and scikit-learn's `PowerTransformer`.
//!
//! Why: a GP assumes roughly Gaussian values. Objectives such as a loss that explodes for a
//! bad learning rate, or Rosenbrock's valley among values up to 10⁴, have a long tail of
//! bad values; fitted raw, the few huge values dominate the fit, the length scales shrink
//! to explain them, and the model says nothing useful about the low region that matters.
//! The transform compresses that tail (or stretches a short one) until the values look
//! Gaussian. It is strictly increasing for every exponent, so the ordering of trials, and
//! with it "better than the best so far", is unchanged; expected improvement is then
//! computed in the warped scale.
//!
//! Values are first standardised (so the exponent does not depend on the objective's units
//! or offset), then `ψ(y; λ)` is `((y + 1)^λ - 1)/λ` for `y ≥ 0` and
//! `-((1 - y)^(2-λ) - 1)/(2 - λ)` for `y < 0` (the logarithm at `λ = 0` and `λ = 2`). `λ`
//! maximises the profile log likelihood `-n/2 ln σ²_ψ + (λ - 1) Σ sign(y) ln(|y| + 1)` over
//! a grid on `[-2, 2]` (step 0.05): a grid, because the likelihood is one-dimensional and
//! cheap, and it cannot fail to converge.

/// A fitted warping: standardisation, then the Yeo-Johnson transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Warp {
    mean: f64,
    scale: f64,
    lambda: f64,
}

impl Warp {
    /// Fits the warping to `y` (finite values). Fewer than three values, or values that are
    /// all equal, get the identity exponent `λ = 1`.
    pub fn fit(y: &[f64]) -> Self {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n.max(1.0);
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.max(1.0)).sqrt();
        let scale = if sd > 1e-12 { sd } else { 1.0 };
        let mut warp = Self {
            mean,
            scale,
            lambda: 1.0,
        };
        if y.len() < 3 || sd <= 1e-12 {
            return warp;
        }
        let z: Vec<f64> = y.iter().map(|v| (v - mean) / scale).collect();
        let jacobian: f64 = z.iter().map(|v| v.signum() * v.abs().ln_1p()).sum();
        let mut best = (f64::NEG_INFINITY, 1.0);
        for step in -40..=40 {
            let lambda = f64::from(step) * 0.05;
            let psi: Vec<f64> = z.iter().map(|v| yeo_johnson(*v, lambda)).collect();
            let m = psi.iter().sum::<f64>() / n;
            let var = psi.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
            if !(var > 0.0 && var.is_finite()) {
                continue;
            }
            let ll = -0.5 * n * var.ln() + (lambda - 1.0) * jacobian;
            if ll > best.0 {
                best = (ll, lambda);
            }
        }
        warp.lambda = best.1;
        warp
    }

    /// The warped value of `y`.
    pub fn apply(&self, y: f64) -> f64 {
        yeo_johnson((y - self.mean) / self.scale, self.lambda)
    }

    /// The value whose warped value is `psi` (the inverse of [`Warp::apply`]); infinite
    /// beyond the transform's range, which a negative exponent bounds above.
    pub fn invert(&self, psi: f64) -> f64 {
        let l = self.lambda;
        let z = if psi >= 0.0 {
            if l.abs() < 1e-9 {
                psi.exp_m1()
            } else {
                let base = l * psi + 1.0;
                if base <= 0.0 {
                    f64::INFINITY
                } else {
                    base.powf(1.0 / l) - 1.0
                }
            }
        } else if (l - 2.0).abs() < 1e-9 {
            -(-psi).exp_m1()
        } else {
            let base = 1.0 - (2.0 - l) * psi;
            if base <= 0.0 {
                f64::NEG_INFINITY
            } else {
                1.0 - base.powf(1.0 / (2.0 - l))
            }
        };
        self.mean + self.scale * z
    }

    /// The fitted exponent (1 is no warping beyond standardisation).
    pub fn lambda(&self) -> f64 {
        self.lambda
    }
}

/// The Yeo-Johnson transform of `y` with exponent `lambda`; strictly increasing in `y`.
pub fn yeo_johnson(y: f64, lambda: f64) -> f64 {
    if y >= 0.0 {
        if lambda.abs() < 1e-9 {
            y.ln_1p()
        } else {
            ((y + 1.0).powf(lambda) - 1.0) / lambda
        }
    } else if (lambda - 2.0).abs() < 1e-9 {
        -(-y).ln_1p()
    } else {
        -((1.0 - y).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skewness(v: &[f64]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
        v.iter().map(|x| ((x - m) / sd).powi(3)).sum::<f64>() / n
    }

    #[test]
    fn the_transform_is_increasing_and_continuous_for_every_exponent() {
        for step in -40..=40 {
            let lambda = f64::from(step) * 0.05;
            let mut last = f64::NEG_INFINITY;
            let mut y = -5.0;
            while y < 5.0 {
                let v = yeo_johnson(y, lambda);
                assert!(v > last, "λ {lambda}: ψ({y}) = {v} after {last}");
                last = v;
                y += 0.01;
            }
            assert!((yeo_johnson(1e-12, lambda) - yeo_johnson(-1e-12, lambda)).abs() < 1e-9);
        }
        assert_eq!(yeo_johnson(2.5, 1.0), 2.5, "λ = 1 is the identity");
        assert_eq!(yeo_johnson(-2.5, 1.0), -2.5);
    }

    /// A long upper tail (exponentials of a uniform grid, like losses that blow up) gets a
    /// small exponent and comes out far less skewed (2.5 before, 0.9 after); symmetric data
    /// is left nearly alone.
    #[test]
    fn a_long_tail_is_compressed_and_symmetric_data_left_alone() {
        let tail: Vec<f64> = (0..40).map(|i| (f64::from(i) * 0.25).exp()).collect();
        let warp = Warp::fit(&tail);
        assert!(warp.lambda() < 0.5, "λ {}", warp.lambda());
        let warped: Vec<f64> = tail.iter().map(|v| warp.apply(*v)).collect();
        assert!(skewness(&tail) > 2.0, "{}", skewness(&tail));
        assert!(skewness(&warped).abs() < 1.0, "{}", skewness(&warped));
        // Order is kept, and the inverse brings values back.
        assert!(warped.windows(2).all(|w| w[0] < w[1]));
        for (y, w) in tail.iter().zip(&warped) {
            assert!((warp.invert(*w) - y).abs() < 1e-9 * y.max(1.0), "{y}");
        }

        let even: Vec<f64> = (0..40).map(|i| f64::from(i) * 0.1 - 2.0).collect();
        let warp = Warp::fit(&even);
        assert!((warp.lambda() - 1.0).abs() < 0.3, "λ {}", warp.lambda());
        // Too few or constant values: no exponent is fitted.
        assert_eq!(Warp::fit(&[1.0, 2.0]).lambda(), 1.0);
        assert_eq!(Warp::fit(&[3.0; 5]).lambda(), 1.0);
    }
}
