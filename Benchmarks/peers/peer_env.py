"""Helpers shared by the peer benchmark scripts: a private virtualenv for the peers, best-of timing,
a scratch folder removed at exit."""
import atexit
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time


def scratch_folder(prefix):
    """A new temporary folder for a benchmark's inputs and outputs, removed when the script exits
    (they used to stay: 256 MB of kernel inputs per run). AFFINITY_KEEP_WORK=1 keeps it."""
    path = tempfile.mkdtemp(prefix=prefix)
    if os.environ.get("AFFINITY_KEEP_WORK"):
        print(f"note: work folder {path} is kept (AFFINITY_KEEP_WORK)", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, path, True)
    return path


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


def cpu_family():
    """The CPU's model name, family, model and widest SIMD (every benchmark prints it)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}
        flags = info.get("flags", "").split()
        simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, {simd})"
    except OSError:
        return platform.processor()


def run(cmd, env=None):
    """Runs a command, echoing it on stderr; its stdout, or exit with its stderr when it fails."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def release_binary(root, given=None):
    """`given` when set, else `affinity` built in release at `root` (the benchmarks' usual first step)."""
    if given:
        return given
    subprocess.check_call(["swift", "build", "-c", "release", "--product", "affinity"], cwd=root, stdout=subprocess.DEVNULL)
    return os.path.join(root, ".build", "release", "affinity")
