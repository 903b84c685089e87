//! Space-filling point sets in the unit cube: a Latin hypercube for the initial design and
//! a randomly shifted Halton sequence for the acquisition's candidates.
//!
//! - A Latin hypercube of `n` points puts exactly one point in each of the `n` equal slices
//!   of every axis (McKay, Beckman & Conover 1979). Of several random ones the design with
//!   the largest smallest pairwise distance is kept (the "maximin" criterion), so the first
//!   trials neither clump nor line up. Parameter importance draws plain (not maximin)
//!   Latin hypercubes of thousands of points.
//! - The Halton sequence takes the radical inverse of the index in the `d`-th prime base for
//!   axis `d`; a random shift modulo 1 (Cranley-Patterson rotation) gives a fresh,
//!   still low-discrepancy set at every step.

use rand::Rng;
use rand::seq::SliceRandom;

const PRIMES: [u32; 20] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
];

/// A maximin Latin hypercube of `n` points in `d` dimensions (best of `tries` draws).
pub fn latin_hypercube(n: usize, d: usize, tries: usize, rng: &mut impl Rng) -> Vec<Vec<f64>> {
    let mut best: Option<(f64, Vec<Vec<f64>>)> = None;
    for _ in 0..tries.max(1) {
        let points = random_latin_hypercube(n, d, rng);
        let score = min_distance(&points);
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, points));
        }
    }
    best.map(|(_, p)| p).unwrap_or_default()
}

/// One random Latin hypercube of `n` points in `d` dimensions, without the maximin
/// choice (whose pairwise distances cost `n²`: too much for the thousands of points a
/// sensitivity estimate draws).
pub fn random_latin_hypercube(n: usize, d: usize, rng: &mut impl Rng) -> Vec<Vec<f64>> {
    let mut points = vec![vec![0.0; d]; n];
    for axis in 0..d {
        let mut slots: Vec<usize> = (0..n).collect();
        slots.shuffle(rng);
        for (point, slot) in points.iter_mut().zip(slots) {
            point[axis] = (slot as f64 + rng.random::<f64>()) / n as f64;
        }
    }
    points
}

fn min_distance(points: &[Vec<f64>]) -> f64 {
    let mut min = f64::INFINITY;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            min = min.min(d);
        }
    }
    min
}

/// The radical inverse of `index` in `base` (the van der Corput sequence).
fn radical_inverse(mut index: u64, base: u32) -> f64 {
    let b = f64::from(base);
    let (mut inv, mut result) = (1.0 / b, 0.0);
    while index > 0 {
        result += (index % u64::from(base)) as f64 * inv;
        index /= u64::from(base);
        inv /= b;
    }
    result
}

/// `n` points of the Halton sequence in `d <= 20` dimensions, shifted by `shift` modulo 1
/// (starting at index 1, so an unshifted set does not begin at the origin).
pub fn halton(n: usize, shift: &[f64]) -> Vec<Vec<f64>> {
    (1..=n as u64)
        .map(|i| {
            shift
                .iter()
                .zip(PRIMES)
                .map(|(s, p)| (radical_inverse(i, p) + s).fract())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latin_hypercube_fills_every_slice_of_every_axis_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (n, d) = (10, 3);
        let points = latin_hypercube(n, d, 20, &mut rng);
        assert_eq!(points.len(), n);
        for axis in 0..d {
            let mut slots: Vec<usize> = points
                .iter()
                .map(|p| (p[axis] * n as f64) as usize)
                .collect();
            slots.sort();
            assert_eq!(slots, (0..n).collect::<Vec<_>>(), "axis {axis}");
        }
        // Maximin beats a single random draw on spread.
        let single = latin_hypercube(n, d, 1, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert!(min_distance(&points) >= min_distance(&single));
    }

    #[test]
    fn halton_covers_the_square_evenly() {
        let points = halton(256, &[0.3, 0.7]);
        let mut cells = [0u32; 16];
        for p in &points {
            assert!(p.iter().all(|x| (0.0..1.0).contains(x)));
            cells[(p[0] * 4.0) as usize * 4 + (p[1] * 4.0) as usize] += 1;
        }
        // 16 points expected per cell; a low-discrepancy set stays close.
        assert!(cells.iter().all(|c| (12..=20).contains(c)), "{cells:?}");
        assert_eq!(radical_inverse(6, 2), 0.375);
        assert!((radical_inverse(5, 3) - 7.0 / 9.0).abs() < 1e-15);
    }
}
