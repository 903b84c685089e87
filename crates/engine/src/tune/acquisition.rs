//! Expected improvement and its logarithm, for minimisation.
//!
//! With posterior mean `μ`, standard deviation `σ` and the best value so far `f*`, the
//! improvement `max(f* - Y, 0)` of `Y ~ N(μ, σ²)` has expectation
//! `EI = σ h(z)`, `z = (f* - μ) / σ`, `h(z) = φ(z) + z Φ(z)` (Jones, Schonlau & Welch 1998).
//!
//! EI underflows to 0 for `z` below about -38, so far from the incumbent every candidate
//! looks equally useless and the optimiser cannot rank them. `log EI = ln h(z) + ln σ` is
//! computed stably instead (the idea of Ament et al. 2023, "Unexpected improvements to
//! expected improvement", as in BoTorch's `LogExpectedImprovement`): for `z < -1`,
//! `h(z) = φ(z) (1 - t R(t))` with `t = -z` and `R(t) = Φ(-t)/φ(t)` the Mills ratio, taken
//! from its continued fraction, and from its asymptotic series for `t > 12`.

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal density.
pub fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z - LN_SQRT_2PI).exp()
}

/// The complementary error function, with fractional error below 1.2e-7 everywhere
/// (the Chebyshev fit in Press et al., *Numerical Recipes*, §6.2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal distribution function.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// `1 - t R(t)` for `t >= 1`, where `R` is the Mills ratio.
fn one_minus_t_mills(t: f64) -> f64 {
    if t > 12.0 {
        // 1 - tR(t) = t⁻² (1 - 3t⁻² + 15t⁻⁴ - 105t⁻⁶ + 945t⁻⁸ - ...); the next term is
        // below 2e-7 relative at t = 12.
        let s = 1.0 / (t * t);
        return s * (1.0 - s * (3.0 - s * (15.0 - s * (105.0 - s * 945.0))));
    }
    // R(t) = 1/(t + 1/(t + 2/(t + 3/(t + ...)))), evaluated from the tail.
    let mut f = t;
    for k in (1..=300).rev() {
        f = t + f64::from(k) / f;
    }
    1.0 - t / f
}

/// `ln h(z)`, finite for every finite `z`.
pub fn log_h(z: f64) -> f64 {
    if z > -1.0 {
        (norm_pdf(z) + z * norm_cdf(z)).ln()
    } else {
        -0.5 * z * z - LN_SQRT_2PI + one_minus_t_mills(-z).ln()
    }
}

/// Expected improvement below `best` (minimisation).
pub fn expected_improvement(mean: f64, std: f64, best: f64) -> f64 {
    if std <= 0.0 {
        return (best - mean).max(0.0);
    }
    let z = (best - mean) / std;
    std * (norm_pdf(z) + z * norm_cdf(z))
}

/// `ln` of the expected improvement below `best` (minimisation); `-inf` only when the
/// posterior is certain and no better than `best`.
pub fn log_expected_improvement(mean: f64, std: f64, best: f64) -> f64 {
    if std <= 0.0 {
        return (best - mean).max(0.0).ln();
    }
    log_h((best - mean) / std) + std.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions_match_known_values() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((norm_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-7);
        assert!((norm_cdf(-1.0) - 0.158_655_253_931_457_05).abs() < 1e-7);
        assert!((norm_pdf(0.0) - 0.398_942_280_401_432_7).abs() < 1e-15);
        assert!((erfc(0.5) - 0.479_500_122_186_953_5).abs() < 1e-7);
    }

    /// EI equals the integral of the improvement against the normal density.
    #[test]
    fn expected_improvement_matches_numerical_integration() {
        for (mean, std, best) in [(0.0, 1.0, 0.0), (1.0, 0.5, 0.2), (-0.3, 2.0, 0.5)] {
            let (lo, hi, n) = (mean - 12.0 * std, best, 200_000);
            let h = (hi - lo) / f64::from(n);
            let integral: f64 = (0..n)
                .map(|i| {
                    let y = lo + (f64::from(i) + 0.5) * h;
                    (best - y) * norm_pdf((y - mean) / std) / std * h
                })
                .sum();
            let ei = expected_improvement(mean, std, best);
            assert!((ei - integral).abs() < 1e-6, "{ei} vs {integral}");
            let log_ei = log_expected_improvement(mean, std, best);
            assert!((log_ei - ei.ln()).abs() < 1e-5, "{log_ei} vs {}", ei.ln());
        }
        assert!((expected_improvement(0.0, 1.0, 0.0) - norm_pdf(0.0)).abs() < 1e-7);
    }

    #[test]
    fn log_ei_is_smooth_and_increasing_where_ei_underflows() {
        let mut last = f64::NEG_INFINITY;
        let mut z = -60.0;
        while z < 5.0 {
            let v = log_h(z);
            assert!(v.is_finite() && v > last, "log h({z}) = {v} after {last}");
            last = v;
            z += 0.01;
        }
        assert_eq!(
            expected_improvement(40.0, 1.0, 0.0),
            0.0,
            "plain EI underflows"
        );
        // Asymptotically ln h(z) ≈ -z²/2 - ln √2π - 2 ln |z|.
        let z: f64 = -40.0;
        let asymptote = -0.5 * z * z - LN_SQRT_2PI - 2.0 * z.abs().ln();
        assert!((log_h(z) - asymptote).abs() < 1e-2);
        // The branches agree where they meet.
        for edge in [-1.0, -12.0] {
            let (a, b) = (log_h(edge - 1e-9), log_h(edge + 1e-9));
            assert!((a - b).abs() < 1e-5, "jump at {edge}: {a} vs {b}");
        }
    }
}
