#!/usr/bin/env python3
"""More inner-product ANN sets from the shared generator (`../shared/bench/ann/gen.py`) with its
parameters varied, so an index tuned on mips-1m-64 is checked on data it was not tuned on.

  mips-300k-96-wide   300,000 x 96, 600 clusters, Zipf 1.0, log-normal norms sigma 1.0
                      (mips-1m-64 has 0.5: the largest norms are ~20x the median, not ~4x)
  mips-300k-96-narrow the same mixture with sigma 0.25
  mips-200k-64-wide   200,000 x 64, 2,000 clusters, Zipf 0.6, sigma 1.5, flatter spectrum

Same file layout, determinism and ground truth (faiss candidates re-scored in float64) as gen.py;
needs numpy and faiss-cpu (peers.py's virtualenv):

    ANN_DATA=/tmp/ann-data python Benchmarks/ann/variants.py mips-300k-96-wide
    python ../shared/bench/ann/peers.py run mips-300k-96-wide --methods faiss-ivf1024-pq32 \\
        --nlist 1024 --ext Benchmarks/ann/affinity-ivf1024.json
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "bench", "ann"))
sys.path.insert(0, SHARED)
import gen  # noqa: E402

VARIANTS = {
    "mips-300k-96-wide": dict(n=300_000, d=96, K=600, zipf=1.0, spread=(0.3, 1.2),
                              decay=0.5, norm_sigma=1.0, seed=20261207),
    "mips-300k-96-narrow": dict(n=300_000, d=96, K=600, zipf=1.0, spread=(0.3, 1.2),
                                decay=0.5, norm_sigma=0.25, seed=20261207),
    "mips-200k-64-wide": dict(n=200_000, d=64, K=2000, zipf=0.6, spread=(0.5, 1.5),
                              decay=0.3, norm_sigma=1.5, seed=20261208),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--out", default=os.environ.get("ANN_DATA", os.path.join(SHARED, "data")))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    gen.SPECS.update(VARIANTS)
    for name in args.datasets:
        t0 = time.time()
        print(f"[{name}]", flush=True)
        xb, xq, info = gen.generate(name)
        norms = (xb.astype("float64") ** 2).sum(axis=1) ** 0.5
        q = [float(x) for x in (norms.min(), *sorted(norms)[len(norms) // 2:len(norms) // 2 + 1], norms.max())]
        print(f"  generated {xb.shape} in {time.time() - t0:.1f}s; clusters {info}; "
              f"norm min/median/max {q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}", flush=True)
        gen.write_dataset(args.out, name, xb, xq)
        print(f"  done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
