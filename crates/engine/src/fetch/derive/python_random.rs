//! Python's `random` module, as far as BIG-bench's generated tasks use it: the Mersenne
//! Twister seeded the way `random.seed(n)` seeds it for an integer `n`, `shuffle` and
//! `choice`. A task drawn with the same seed then has the same examples as BIG-bench's own
//! run of its `task.py` (CPython 3; the algorithms have not changed since 3.2).

const N: usize = 624;
const M: usize = 397;

/// `random.Random(seed)` for a seed below 2³².
pub struct PythonRandom {
    state: [u32; N],
    next: usize,
}

impl PythonRandom {
    /// `random.seed(seed)`: CPython's `init_by_array` over the seed's 32-bit words.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = 19_650_218;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        let key = [seed];
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = state[i - 1];
            state[i] = (state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = state[i - 1];
            state[i] = (state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                state[0] = state[N - 1];
                i = 1;
            }
        }
        state[0] = 0x8000_0000;
        Self { state, next: N }
    }

    /// `random.getrandbits(32)`.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7fff_ffff);
            let odd = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ odd;
        }
        self.next = 0;
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
