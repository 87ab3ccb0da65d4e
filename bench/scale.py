"""Throughput of ``deeplab segment`` (or ``deeplab crf``) over many images: one process against a local
pool and a Dask cluster.

``--job segment``: ~200 generated images (held-out samples of ``nets.deeplab.shapes_dataset``, 97x97
PNGs), a demo net with its CRF preset, label PNGs and probabilities written as ``deeplab segment
--save-probs`` does. ``--job crf``: the dense CRF alone as ``deeplab crf IMAGES --probs DIR
--save-probs`` runs it, on ~40 photographs of 500x375 (``bench/crf.py``'s, each shifted by a few
pixels) with 21 labels of smooth seeded probabilities, DeepLab-v2's preset. ``--job search``: the CRF
parameter search as ``deeplab crf-search`` runs it, on ~10 of those photographs with a ground truth of
their own, a grid of 4 settings around DeepLab-v2's preset (its per-image matrices are the files compared).
Configurations, each in a fresh process, one after the other in the same run:

* ``1x2``: one process, 2 threads (Numba and BLAS) - the serial run;
* ``2x1``: a local pool of 2 worker processes, 1 thread each (``--workers 2``);
* ``dask-2x1``: a Dask LocalCluster of 2 worker processes, 1 thread each (``--scheduler``), made by
  ``nets.app.workers.local_cluster`` (workers with a 128 MiB ``MALLOC_TRIM_THRESHOLD_``); the cluster's
  start and stop count.

The time is the run as ``deeplab segment`` measures it: starting the local workers (``--workers``) or
connecting to the running cluster (``--scheduler``), loading the model in each worker process,
reading, segmenting and writing every image. Starting and stopping the LocalCluster itself (its
scheduler, nannies and worker processes; with ``--scheduler`` that happens once, before any run) is
reported beside it. Every configuration's files are compared with the serial
run's, byte for byte. Peak memory: the resident set of the main process and the largest of its
worker processes (Linux ``ru_maxrss``).

Usage::

    python bench/scale.py [--job segment|crf|search] [--images N] [--model demo-aspp] [--repeat 2] [--markdown]
"""
import argparse
import filecmp
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A script's folder comes first on sys.path; bench/atrous.py would then hide the atrous package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CONFIGS = {"1x2": (1, None), "2x1": (2, None), "dask-2x1": (2, "dask")}
SEARCH_GRID = {"w_bilateral": (3.0, 4.0), "theta_alpha": (60.0, 70.0)}


def _child(config, images, out, model, job):
    """Run one configuration in this (fresh) process; print one JSON line."""
    workers, engine = CONFIGS[config]
    from nets.app import batch
    from nets.app.workers import limit_threads
    if workers == 1:
        limit_threads(2)
    from nets.app.files import image_files
    paths = image_files([images])
    if job == "crf":  # each image's probabilities beside it, NAME_probs.npy
        import crf
        settings = batch.RefineSettings(crf.get_preset("deeplab-v2-resnet101-voc"), backend="cpu")
        files = functools.partial(batch.refine_files, paths, settings, images, out, save_probs=True)
    elif job == "search":  # the probabilities beside each image, the ground truth in ../truth
        import crf
        from nets.app import search
        presets = search.grid_presets(crf.get_preset("deeplab-v2-resnet101-voc"), SEARCH_GRID)
        triples = [(p, p[:-4] + "_probs.npy", str(Path(images).parent / "truth" / Path(p).name)) for p in paths]
        settings = search.SearchSettings(presets, 21, backend="cpu")

        def files(**where):
            return search.search_files(triples, settings, state_dir=out, **where)[1]
    else:
        settings = batch.Settings(model, crf="auto", backend="cpu")
        files = functools.partial(batch.segment_files, paths, settings, out, save_probs=True)
    cluster_seconds = 0.0
    if engine == "dask":
        from nets.app.workers import local_cluster
        t = time.perf_counter()
        with local_cluster(workers) as client:
            cluster_seconds = time.perf_counter() - t
            start = time.perf_counter()
            summary = files(client=client)
            seconds = time.perf_counter() - start
            t = time.perf_counter()
        cluster_seconds += time.perf_counter() - t
    else:
        start = time.perf_counter()
        summary = files(workers=workers)
        seconds = time.perf_counter() - start
    print(json.dumps({"config": config, "seconds": seconds, "cluster_seconds": cluster_seconds,
                      "images": summary.done,
                      "failed": len(summary.failures), "workers": summary.workers,
                      "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def _write_inputs(folder, count, job):
    """The run's images (and for ``crf`` each image's NAME_probs.npy beside it)."""
    import numpy as np
    from PIL import Image
    if job == "segment":
        from nets.deeplab import shapes_dataset
        for n in range(count):
            Image.fromarray(shapes_dataset.sample(n, "heldout")[0]).save(folder / f"s{n:04d}.png")
        return
    import importlib.util

    from crf.synthetic import smooth_logits
    spec = importlib.util.spec_from_file_location("bench_crf", Path(__file__).with_name("crf.py"))
    bench_crf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_crf)
    photo = bench_crf._natural_photo()
    from nets.app.imageio import write_label_png
    if job == "search":
        (folder.parent / "truth").mkdir()
    for n in range(count):
        Image.fromarray(np.roll(photo, 7 * n, axis=1)).save(folder / f"p{n:04d}.png")
        logits = smooth_logits(21, 375, 500, seed=n)
        p = np.exp(logits - logits.max(axis=0))
        np.save(folder / f"p{n:04d}_probs.npy", (p / p.sum(axis=0)).astype(np.float32))
        if job == "search":  # a ground truth of its own: the labels of other smooth logits
            truth = smooth_logits(21, 375, 500, seed=10_000 + n).argmax(axis=0).astype(np.uint8)
            write_label_png(folder.parent / "truth" / f"p{n:04d}.png", truth)


def _settings_count():
    count = 1
    for values in SEARCH_GRID.values():
        count *= len(values)
    return count


def _environment():
    import numba
    import numpy

    from nets.app.environment import benchmark_line
    return (f"python {sys.version.split()[0]}, numpy {numpy.__version__}, numba {numba.__version__}, "
            f"{os.cpu_count()} CPUs\n{benchmark_line()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=("segment", "crf", "search"), default="segment")
    parser.add_argument("--images", type=int, default=None, help="default 200 (segment), 40 (crf), 10 (search)")
    parser.add_argument("--model", default="demo-aspp")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest counts")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child, args.model, args.job)
        return 0
    if args.images is None:
        args.images = {"segment": 200, "crf": 40, "search": 10}[args.job]

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        _write_inputs(images, args.images, args.job)
        best = {}
        for r in range(args.repeat):
            for config in CONFIGS:
                out = Path(tmp) / f"out-{config}-{r}"
                proc = subprocess.run([sys.executable, __file__, "--job", args.job, "--model", args.model,
                                       "--child", config, str(images), str(out)], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stdout + proc.stderr, file=sys.stderr)
                    return 1
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                reference = Path(tmp) / "out-1x2-0"
                names = sorted(p.name for p in reference.iterdir())
                match, mismatch, errors = filecmp.cmpfiles(reference, out, names, shallow=False)
                result["identical"] = not mismatch and not errors and len(match) == len(names)
                print(f"{config:<9} run {r + 1}: {result['seconds']:.2f} s, {result['images'] / result['seconds']:.2f} "
                      f"images/s, identical to 1x2: {result['identical']}"
                      + (f" (cluster start and stop {result['cluster_seconds']:.2f} s)" if result["cluster_seconds"] else ""),
                      flush=True)
                if config not in best or result["seconds"] < best[config]["seconds"]:
                    best[config] = result
    base = best["1x2"]["images"] / best["1x2"]["seconds"]
    pool = best["2x1"]["images"] / best["2x1"]["seconds"]
    rows = []
    for config, result in best.items():
        rate = result["images"] / result["seconds"]
        seconds = f"{result['seconds']:.2f}" + (f" (+{result['cluster_seconds']:.2f} cluster)"
                                                 if result["cluster_seconds"] else "")
        rows.append((config, result["workers"], seconds, f"{rate:.2f}", f"{rate / base:.2f}",
                     f"{rate / pool:.2f}", f"{result['rss_main_mb']:.0f} / {result['rss_worker_mb']:.0f}",
                     "yes" if result["identical"] else "NO", str(result["failed"])))
    header = ("config", "workers", "seconds", "images/s", "vs 1x2", "vs 2x1", "peak RSS main / worker (MB)",
              "files identical", "failed")
    what = {"segment": f"{args.model} + CRF", "crf": "the dense CRF alone (500x375, 21 labels)",
            "search": f"the CRF parameter search (500x375, 21 labels, {_settings_count()} settings: "
                      f"{1 / (base * _settings_count()):.3f} s a setting on 1x2)"}[args.job]
    written = "confusion matrices" if args.job == "search" else "label PNGs and probabilities"
    print(f"\n{args.images} images, {what}, {written} written; best of {args.repeat}")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [header] + rows:
            print("  ".join(f"{c:<14}" for c in row))
    print(_environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
