//! Python's `random` module, as far as BIG-bench's generated tasks use it: the Mersenne
//! Twister seeded the way `random.seed(n)` seeds it for an integer `n`, `shuffle` and
//! `choice`. A task drawn with the same seed then has the same examples as BIG-bench's own
//! run of its `task.py` (CPython 3; the algorithms have not changed since 3.2).

/// `random.Random(seed)` for a seed below 2³².
pub struct PythonRandom {
    twister: rand_mt::Mt,
}

impl PythonRandom {
    /// `random.seed(seed)`: CPython seeds its Mersenne Twister with `init_by_array` over
    /// the seed's 32-bit words, as `Mt::new_with_key` does.
    pub fn new(seed: u32) -> Self {
        Self {
            twister: rand_mt::Mt::new_with_key([seed]),
        }
    }

    /// `random.getrandbits(32)`.
    pub fn next_u32(&mut self) -> u32 {
        self.twister.next_u32()
    }

    /// `random._randbelow(n)` for `0 < n < 2³²`: draws of `n.bit_length()` bits until
    /// one is below `n`.
    fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0 && n <= u32::MAX as usize);
        let bits = usize::BITS - n.leading_zeros();
        loop {
            let r = (self.next_u32() >> (32 - bits)) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `random.shuffle(items)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `random.choice(items)`.
    pub fn choice<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `random.seed(42); [random.getrandbits(32) for _ in range(3)]` in CPython 3.11.
    #[test]
    fn the_stream_is_cpython_s() {
        let mut r = PythonRandom::new(42);
        let first: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(first, [2_746_317_213, 478_163_327, 107_420_369]);
    }

    /// `random.seed(42); x = list(range(10)); random.shuffle(x)` and then
    /// `[random.choice("abc") for _ in range(5)]` in CPython 3.11.
    #[test]
    fn shuffle_and_choice_are_cpython_s() {
        let mut r = PythonRandom::new(42);
        let mut x: Vec<u32> = (0..10).collect();
        r.shuffle(&mut x);
        assert_eq!(x, [7, 3, 2, 8, 5, 6, 9, 4, 0, 1]);
        let picks: String = (0..5).map(|_| r.choice(&['a', 'b', 'c'])).collect();
        assert_eq!(picks, "cbaaa");
    }
}
