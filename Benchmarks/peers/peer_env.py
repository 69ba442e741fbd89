"""Helpers shared by the peer benchmark scripts: a private virtualenv for the peers, best-of timing."""
import os
import subprocess
import sys
import time


def ensure_venv(venv, packages):
    """Re-runs the calling script inside `venv`, creating it with `packages` from PyPI the first time.
    The peers are never dependencies of the project."""
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(py):
        print(f"creating virtualenv {venv} with {', '.join(packages)} ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(venv, "bin", "pip"), "install", "-q"] + packages)
    os.execv(py, [py] + sys.argv)


def best(repeats, fn):
    """Best wall time of `repeats` calls of fn."""
    t_best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def read_pairs(path):
    """(users, items, user count, item count) of a PROTOCOL TSV (optional `user...` header), IDs
    numbered in order of first appearance, as our vocabularies do."""
    users, items, um, im = [], [], {}, {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n == 0 and line.startswith("user"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            users.append(um.setdefault(parts[0], len(um)))
            items.append(im.setdefault(parts[1], len(im)))
    return users, items, len(um), len(im)
