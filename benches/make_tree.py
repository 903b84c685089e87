#!/usr/bin/env python3
"""Generate the pipeline-engine benchmark tree: about 2 GB in 10,000 files.

Most files are 1-100 KiB (log-uniform); 30 are 20-100 MB. Content and sizes come from a
fixed seed, so every machine gets the same tree. Usage:

    python3 benches/make_tree.py DIR [--files 10000] [--big 30] [--seed 42]
"""
import argparse
import os
import random

CHUNK = 4 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=30)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    big = set(rng.sample(range(args.files), args.big))
    total = 0
    for i in range(args.files):
        if i in big:
            size = rng.randint(20_000_000, 100_000_000)
        else:
            size = int(1024 * 100 ** rng.random())  # 1 KiB .. 100 KiB, log-uniform
        path = os.path.join(args.dir, f"d{i // 100:03d}", f"f{i % 100:02d}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, CHUNK)
                f.write(rng.randbytes(n))
                left -= n
        total += size
    print(f"{args.files} files, {total / 1e9:.2f} GB in {args.dir}")


if __name__ == "__main__":
    main()
