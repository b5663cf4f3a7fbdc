"""CoIDO at scale (docs/methods/coido_baselines.md#clustering-at-scale): spectral clustering of the training subset
S, exact vs fast solver.

Rows: wall and CPU time, peak RSS, clusters and adjusted Rand index (ARI) for 20K and 133K points of
1539-d synthetic features with cluster structure (``frugalvl.testing.coido_scale.clustered_features``: 20
Gaussian clusters of unequal size, 1536 CLIP dims + 3 scores). At 20K the fast solver is compared with the
exact one (ARI), both as run at 20K (exact kNN below 30K points) and with the HNSW kNN of large n forced
(``fast-hnsw``), and the exact one with itself under another discretisation seed (its own stability).
Each case runs in a fresh process limited to ``--threads`` threads (default 2), so peak RSS is its own.

    timeout 1800 .venv/bin/python bench/coido_scale.py              # 20K exact + fast, 133K fast
    .venv/bin/python bench/coido_scale.py --sizes 20000 --exact-seeds 42
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_case(n: int, solver: str, seed: int, threads: int, labels_out: str, noise: float = 1.0) -> dict:
    """Cluster n synthetic points with ``solver``; runs inside the child process."""
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass
    from frugalvl.select.clustering import ClusterSettings, cluster_features, cluster_points
    from frugalvl.testing.coido_scale import clustered_features

    clip, scores, truth = clustered_features(n, noise=noise)
    if solver == "fast-hnsw":  # the approximate kNN of large n, forced at this n (to compare it with exact)
        settings = ClusterSettings(solver="fast", flat_max=0, random_state=seed)
    else:
        settings = ClusterSettings(solver=solver, random_state=seed)
    feats = cluster_features(clip, scores, settings)
    del clip
    wall, cpu = time.perf_counter(), time.process_time()
    out = cluster_points(feats, settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.save(labels_out, np.stack([out["labels"], truth]))
    return {
        "n": n,
        "solver": solver,
        "seed": seed,
        "wall_s": wall,
        "cpu_s": cpu,
        "knn_s": out["knn_s"],
        "eigen_s": out["spectral_s"],
        "clusters": out["n_clusters"],
        "method": out["method"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def run_case(n: int, solver: str, seed: int, threads: int, tmp: Path, noise: float = 1.0) -> tuple[dict, object]:
    import numpy as np

    labels = tmp / f"labels-{n}-{solver}-{seed}.npy"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n), solver, str(seed), str(threads), str(labels), str(noise)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"case {n} {solver} failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row, np.load(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 133000])
    parser.add_argument("--exact-max", type=int, default=20000, help="run the exact solver up to this many points")
    parser.add_argument(
        "--exact-seeds",
        type=int,
        nargs="+",
        default=[42, 7],
        help="discretisation seeds of the exact solver (two: its own stability)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--noise",
        type=float,
        default=1.0,
        help="within-cluster noise of the synthetic features (higher: clusters overlap more)",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, solver, seed, threads, out, noise = args.child
        print(json.dumps(one_case(int(n), solver, int(seed), int(threads), out, float(noise))))
        return
    from sklearn.metrics import adjusted_rand_score as ari

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            exact = {}
            if n <= args.exact_max:
                for seed in args.exact_seeds:
                    row, lab = run_case(n, "exact", seed, args.threads, tmp, args.noise)
                    exact[seed] = lab[0]
                    row["ari_truth"] = ari(lab[1], lab[0])
                    row["ari_exact"] = ari(exact[args.exact_seeds[0]], lab[0]) if seed != args.exact_seeds[0] else None
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            for solver in ("fast", "fast-hnsw") if exact else ("fast",):
                row, lab = run_case(n, solver, 42, args.threads, tmp, args.noise)
                row["ari_truth"] = ari(lab[1], lab[0])
                row["ari_exact"] = ari(exact[args.exact_seeds[0]], lab[0]) if exact else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    head = (
        f"{'points':>8} {'solver':>9} {'seed':>4} {'wall s':>7} {'CPU s':>7} {'kNN s':>7} {'eigen s':>7} "
        f"{'RSS GB':>6} {'K':>3} {'ARI vs exact':>12} {'ARI vs truth':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        vs_exact = "-" if r["ari_exact"] is None else f"{r['ari_exact']:.4f}"
        print(
            f"{r['n']:>8} {r['solver']:>9} {r['seed']:>4} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['knn_s']:>7.1f} "
            f"{r['eigen_s']:>7.1f} {r['peak_rss_gb']:>6.2f} {r['clusters']:>3} {vs_exact:>12} "
            f"{r['ari_truth']:>12.4f}"
        )
    print(
        f"\n{args.threads} threads per case; machine load average now {os.getloadavg()[0]:.1f} "
        f"(wall times grow with other processes on the machine; CPU s do not)"
    )


if __name__ == "__main__":
    main()
