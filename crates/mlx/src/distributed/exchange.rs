//! The tune stage's [`Exchange`] over an MLX group: bytes gathered with `all_gather`, the
//! lengths first (every rank's array must have the same shape), then the padded bytes.

use super::Group;
use mlx_rs::Array;
use pipe_engine::stages::tune::Exchange;

impl Exchange for Group {
    fn rank(&self) -> usize {
        Group::rank(self)
    }

    fn size(&self) -> usize {
        Group::size(self)
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let len = i32::try_from(mine.len())?;
        let lengths = self.all_gather(&Array::from_slice(&[len], &[1]))?;
        lengths.eval()?;
        let lengths: Vec<usize> = lengths
            .as_slice::<i32>()
            .iter()
            .map(|&n| usize::try_from(n).unwrap_or(0))
            .collect();
        let width = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = mine.to_vec();
        padded.resize(width, 0);
        let all = self.all_gather(&Array::from_slice(&padded, &[1, width as i32]))?;
        all.eval()?;
        let bytes: &[u8] = all.as_slice();
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(rank, &n)| bytes[rank * width..rank * width + n].to_vec())
            .collect())
    }
}
