"""Forward-pass speed and memory of the official DeepLab nets: this project against OpenCV's DNN module.

Cases (seeded random weights from ``nets.engine.random_weights``, the same caffemodel for both):

* DeepLab-LargeFOV (v1) at 513x513 and 321x321;
* DeepLab-v2 ResNet-101 ASPP, single scale, at 321x321;
* DeepLab-v2 ResNet-101 ASPP with MSC at 513x513 (this project only).

Each measurement runs in a fresh process with 2 threads (Numba, BLAS, and
``cv2.setNumThreads(2)``), so that its peak resident memory is its own. OpenCV runs
twice: in its default mode (layer fusion and Winograd convolutions) and with
Winograd off. The project runs the released test prototxt; OpenCV a deploy twin
(nets.engine.deploy). One warm-up pass, then the median of ``--repeat`` passes.

Usage::

    python bench/forward.py [--repeat 5] [--markdown] [--only largefov-513 ...]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A script's folder comes first on sys.path; bench/atrous.py would then hide the atrous package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

THREADS = 2
CASES = {  # name: (model, side, compare with OpenCV)
    "largefov-513": ("deeplab-v1-largefov", 513, True),
    "largefov-321": ("deeplab-v1-largefov", 321, True),
    "resnet101-321": ("deeplab-v2-resnet101", 321, True),
    "resnet101-msc-513": ("deeplab-v2-resnet101-msc", 513, False),
}
IMPLS = ("ours", "opencv", "opencv-no-winograd")


def _prepare(folder, model):
    """Write the caffemodel (and the deploy twins' folder) for a model once."""
    from nets.caffe import read_prototxt, write_caffemodel
    from nets.deeplab import model_spec, prototxt_path
    from nets.engine.random_weights import random_weights
    path = folder / f"{model}.caffemodel"
    if not path.exists():
        spec = model_spec(model)
        weights = random_weights(spec, (1, 3, 65, 65), seed=2018)
        # Saved from the train net, as Caffe saved the released models (OpenCV cannot parse
        # DeepLab's MatWrite parameters in a new-dialect file).
        train = Path(str(prototxt_path(model)).replace("_test", "_train"))
        saved = read_prototxt(train) if train.is_file() else spec
        write_caffemodel(path, saved, weights, dialect="new")
    return path


def _measure(impl, model, side, caffemodel, repeat):
    """Run in the child: median seconds of ``repeat`` passes after one warm-up."""
    import numpy as np
    x = np.random.default_rng(0).uniform(-120, 130, (1, 3, side, side)).astype(np.float32)
    if impl == "ours":
        from nets.deeplab import model_spec
        from nets.caffe import read_caffemodel
        from nets.engine.net import Net
        net = Net.from_spec(model_spec(model), read_caffemodel(caffemodel))
        out = net.outputs[0]

        def run():
            return net.forward(x, outputs=[out], backend="cpu")[out]
    else:
        import cv2
        from nets.caffe import format_prototxt
        from nets.deeplab import model_spec
        from nets.engine.deploy import deploy_spec
        cv2.setNumThreads(THREADS)
        proto = Path(caffemodel).with_suffix(f".{side}.deploy.prototxt")
        deploy = deploy_spec(model_spec(model), x.shape)
        proto.write_text(format_prototxt(deploy))
        net = cv2.dnn.readNetFromCaffe(str(proto), str(caffemodel))
        if impl == "opencv-no-winograd" and hasattr(net, "enableWinograd"):
            net.enableWinograd(False)
        last = deploy.layers[-1].name

        def run():
            net.setInput(x)
            return net.forward(last)
    first = time.perf_counter()
    run()
    warmup = time.perf_counter() - first
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times), "min_s": min(times), "warmup_s": warmup, "peak_rss_mb": peak_mb}


def _child(impl, case, caffemodel, repeat):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    # OpenBLAS's threads sleep after a product, as in the deeplab command (atrous/__init__.py);
    # the child imports NumPy before the package, so it is set here, for both implementations.
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    cmd = [sys.executable, __file__, "--child", impl, case, str(caffemodel), "--repeat", str(repeat)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results, markdown):
    head = ["case", "ours (s)", "OpenCV (s)", "OpenCV no-Winograd (s)", "ours / OpenCV", "ours / no-Winograd",
            "peak RSS ours / OpenCV (MB)"]
    rows = []
    for case, r in results.items():
        ours = r["ours"]
        cv, nw = r.get("opencv"), r.get("opencv-no-winograd")
        rows.append([case, f"{ours['median_s']:.3f}",
                     f"{cv['median_s']:.3f}" if cv else "-", f"{nw['median_s']:.3f}" if nw else "-",
                     f"{ours['median_s'] / cv['median_s']:.2f}" if cv else "-",
                     f"{ours['median_s'] / nw['median_s']:.2f}" if nw else "-",
                     f"{ours['peak_rss_mb']:.0f} / {cv['peak_rss_mb']:.0f}" if cv else f"{ours['peak_rss_mb']:.0f}"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [head] + rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--workdir", default=None, help="folder for the caffemodels (default: a temporary one)")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "CASE", "CAFFEMODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, case, caffemodel = args.child
        model, side, _ = CASES[case]
        print(json.dumps(_measure(impl, model, side, caffemodel, args.repeat)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        results = {}
        for case in args.only or list(CASES):
            model, side, compare = CASES[case]
            caffemodel = _prepare(folder, model)
            results[case] = {}
            for impl in IMPLS if compare else ("ours",):
                results[case][impl] = _child(impl, case, caffemodel, args.repeat)
                print(f"{case:<18} {impl:<19} median {results[case][impl]['median_s']:.3f} s, "
                      f"peak RSS {results[case][impl]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    import cv2
    import numba
    print(f"threads: {THREADS}; OpenCV {cv2.__version__}; Numba {numba.__version__}; repeat {args.repeat} "
          f"(median after one warm-up)\n")
    print(_table(results, args.markdown))
    from nets.app.environment import benchmark_line
    print(benchmark_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
