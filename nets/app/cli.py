"""The ``deeplab`` command (also ``python -m nets``).

This is the only module that parses arguments. Heavy imports (numpy, numba)
happen after parsing, so that ``--threads`` can set the thread counts of Numba
and of the BLAS library before either starts its thread pool.
"""
import argparse
import contextlib
import os
import sys


#: Images per forward pass of ``segment`` on a GPU unless ``--batch`` says otherwise.
GPU_BATCH = 8

FLIP_HELP = ("also run the net on the image mirrored left to right and fuse the scores by MAX, as the scales "
             "(test-time augmentation, twice the network's time; not in DeepLab v1/v2's protocol)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_threads(parser):
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="threads for Numba kernels and BLAS (default: NUMBA_NUM_THREADS or all cores; "
                             "with --workers or --scheduler, per worker process, default max(1, cores // N))")


def _add_many(parser):
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="local worker processes, each with max(1, cores // N) threads (default 1)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="a Dask scheduler, e.g. tcp://10.0.0.5:8786 (pip install \".[distributed]\")")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_state(parser, what):
    parser.add_argument("--state", metavar="DIR", help=f"keep each image's {what} in DIR (for --resume)")
    parser.add_argument("--resume", action="store_true", help="reuse the confusion matrices in --state DIR")


def _apply_threads(n):
    """Set Numba's and BLAS's thread counts; must run before numpy/numba are imported."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def cmd_info(args):
    from nets.app.environment import describe
    rows = describe()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_check(args):
    from nets.app.selfcheck import run_checks
    return run_checks(backend=args.backend, quick=args.quick, seed=args.seed, out=sys.stdout)


def cmd_convert(args):
    import warnings
    from pathlib import Path

    from nets.engine.convert import convert
    problem = _output_file_problem(args.output, (".npz",))
    if problem:
        print(f"deeplab convert: {problem}", file=sys.stderr)
        return 2
    prototxt = args.prototxt
    if not Path(prototxt).exists():
        from nets.deeplab import MODELS, prototxt_path
        if prototxt not in MODELS:
            print(f"deeplab convert: {prototxt}: no such file, and not a model name ({sorted(MODELS)})",
                  file=sys.stderr)
            return 2
        prototxt = prototxt_path(prototxt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            shapes = convert(args.caffemodel, prototxt, args.output, strict=args.strict)
        except (OSError, ValueError) as exc:
            print(f"deeplab convert: {exc}", file=sys.stderr)
            return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"wrote {args.output}: {len(shapes)} blobs")
    return 0


def _err(command, message):
    print(f"deeplab {command}: {message}", file=sys.stderr)


def _output_file_problem(path, suffixes):
    """Why ``-o path`` cannot take the output file, or None; asked before any work is done.

    ``suffixes``: the extensions the file may have (lower case, with the dot).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return f"-o {path} is a folder; name the output file ({' or '.join(suffixes)})"
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        return f"-o {path}: expected a file name ending in {' or '.join(suffixes)}, got {suffix or 'no extension'!r}"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"-o {path}: its folder {folder} does not exist"
    return None


def _client(args):
    """The Dask client of ``--scheduler``, or None."""
    if getattr(args, "scheduler", None) is None:
        return None
    from nets.app.workers import connect
    return connect(args.scheduler)


def _worker_threads(args):
    """``--threads`` for each worker process, when there are worker processes."""
    return args.threads if args.workers != 1 or args.scheduler else None


def _settings(args):
    """The run's :class:`~nets.app.batch.Settings` and its model's class names.

    The model is loaded here, so that a bad model or weight file is reported at once; a serial run
    keeps it, a run on worker processes lets it go (each worker loads its own).
    """
    from nets.app.batch import Settings, load, unload
    from nets.deeplab import parse_scales
    settings = Settings(args.model, args.weights, None if args.crf.lower() == "none" else args.crf,
                        parse_scales(args.scales), args.backend, flip=args.flip)
    classes = load(settings)[0].classes
    if args.workers != 1 or args.scheduler:
        unload()
    return settings, classes


@contextlib.contextmanager
def _warnings_as_lines():
    """Print the warnings raised inside as ``warning: ...`` lines on standard error."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)


def _progress_logger(progress, verbose):
    def on_outcome(outcome):
        progress.update(outcome)
        for line in outcome.warnings:
            progress.write(f"warning: {line}")
        if outcome.error is not None:
            progress.write(f"error: {outcome.error}")
        elif verbose and not outcome.skipped:
            progress.write(f"{outcome.path}: " + ", ".join(f"{s} {1000 * v:.1f} ms" for s, v in outcome.timings.items()))
    return on_outcome


def _run_many(command, args, total, client, job):
    """``job(on_outcome=..., threads=...)`` with a progress bar and warnings as lines; None after an error."""
    from nets.app.batch import Progress
    progress = Progress(total, quiet=args.quiet, description=command)
    try:
        with _warnings_as_lines():
            return job(on_outcome=_progress_logger(progress, args.verbose), threads=_worker_threads(args))
    except (OSError, ValueError) as exc:
        _err(command, exc)
        return None
    finally:
        progress.close()
        if client is not None:
            client.close()


def _image_paths(command, inputs):
    """The image files of files and folders, or an empty list after saying there are none."""
    from nets.app.files import image_files
    paths = image_files(inputs)
    if not paths:
        _err(command, f"no image files in {inputs}")
    return paths


def _report_many(command, summary, total, written):
    """Print what a run over many images wrote and its summary line; the exit code (1 if any image failed)."""
    if summary is None:
        return 1
    failures = summary.failures
    kept = f" ({summary.skipped} already there)" if summary.skipped else ""
    print(f"wrote {summary.ran} of {total} {written}{kept}")
    print(summary.line())
    if failures:
        _err(command, f"{len(failures)} of {total} images failed:\n  " + "\n  ".join(o.error for o in failures))
        return 1
    return 0


def cmd_segment(args):
    from atrous.backend import resolve_backend
    from nets.app import batch
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        _err("segment", f"-o {args.output} is a file; -o names the output folder (a label map per image)")
        return 2
    try:
        settings, _ = _settings(args)
        client = _client(args)
    except (OSError, ValueError) as exc:
        _err("segment", exc)
        return 1
    paths = _image_paths("segment", args.inputs)
    if not paths:
        return 1
    size = args.batch or (GPU_BATCH if resolve_backend(settings.backend) == "cuda" else 1)
    summary = _run_many("segment", args, len(paths), client, lambda **kw: batch.segment_files(
        paths, settings, args.output, overlay=args.overlay, save_probs=args.save_probs, workers=args.workers,
        client=client, resume=args.resume, batch=size, **kw))
    return _report_many("segment", summary, len(paths), f"label maps to {args.output}")


def cmd_evaluate(args):
    import numpy as np

    from nets.app import batch
    from nets.app.evaluate import confusion_matrix, format_table, pair_files
    from nets.app.imageio import ImageReadError, read_label_png
    if (args.images is None) == (args.predictions is None):
        _err("evaluate", "give either --images with --model, or --predictions")
        return 2
    if args.predictions is not None and (args.workers != 1 or args.scheduler or args.state or args.resume):
        _err("evaluate", "--workers, --scheduler, --state and --resume are for --images with --model")
        return 2
    client = None
    try:
        stems = _listed_stems(args.list)
        if args.predictions is not None:
            pairs, errors = pair_files(args.labels, args.predictions, suffix=".png", stems=stems)
            num_classes, classes = args.num_classes, None
        else:
            if args.model is None:
                _err("evaluate", "--images needs --model")
                return 2
            pairs, errors = pair_files(args.labels, args.images, stems=stems)
            settings, classes = _settings(args)
            num_classes = len(classes) if classes else args.num_classes
            client = _client(args)
    except (OSError, ValueError) as exc:
        _err("evaluate", exc)
        return 1
    if args.predictions is not None:
        matrix, done = np.zeros((num_classes, num_classes), np.int64), 0
        for label_path, other in pairs:
            try:
                matrix += confusion_matrix(read_label_png(label_path), read_label_png(other), num_classes)
                done += 1
            except (ImageReadError, ValueError, TypeError) as exc:
                errors.append(f"{label_path}: {exc}")
        summary_line = None
    else:
        result = _run_many("evaluate", args, len(pairs), client, lambda **kw: batch.evaluate_files(
            pairs, settings, num_classes, workers=args.workers, client=client, state_dir=args.state,
            resume=args.resume, **kw))
        if result is None:
            return 1
        matrix, summary = result
        errors += [o.error for o in summary.failures]
        done, summary_line = summary.done, summary.line()
    print(f"{done} images, {matrix.sum()} pixels counted (255 ignored)")
    print("confusion matrix (rows: ground truth, columns: prediction):")
    for row in matrix:
        print("  " + " ".join(f"{v:>9d}" for v in row))
    print("\n".join(format_table(matrix, classes)))
    if summary_line:
        print(summary_line)
    if errors:
        _err("evaluate", f"{len(errors)} problems:\n  " + "\n  ".join(errors))
        return 1
    return 0


def cmd_crf(args):
    source = args.probs if args.probs is not None else args.labels
    if os.path.isdir(source) or len(args.inputs) > 1 or os.path.isdir(args.inputs[0]):
        return _crf_many(args, source)
    if args.workers != 1 or args.scheduler or args.resume:
        _err("crf", "--workers, --scheduler and --resume are for many images: --probs DIR or --labels DIR")
        return 2

    from crf.reduced import enlarge_marginals
    from nets.app.files import save_probabilities
    from nets.app.imageio import write_label_png
    from nets.app.refine import change_report, memory_warning, read_inputs, refine_model
    from nets.deeplab import label_map
    from nets.deeplab.processing import MAX_LABELS
    problem = _output_file_problem(args.output, (".png",))  # label maps are indexed PNGs
    if problem:
        _err("crf", problem)
        return 2
    try:
        settings = _refine_settings(args)
        image, probs, coarse = read_inputs(args.inputs[0], source, settings.source, settings.logits)
        n_labels = probs.shape[0] if probs is not None else settings.num_labels
        if n_labels > MAX_LABELS:  # said now, not after the CRF has run
            raise ValueError(f"{source}: {n_labels} labels, but a label map (uint8 PNG) holds at most "
                             f"{MAX_LABELS}")
        warning = memory_warning(*image.shape[:2], n_labels, settings.preset, settings.max_side,
                                 backend=settings.backend)
        if warning:
            _err("crf", f"warning: {warning}")
        model = refine_model(image, probs, coarse, settings.num_labels, settings.gt_prob, settings.preset,
                             settings.logits, settings.backend, settings.max_side)
        q = enlarge_marginals(model.inference(settings.preset.iterations), image.shape[:2])
        labels = label_map(q)  # Caffe's tie rule
        write_label_png(args.output, labels)
    except (OSError, ValueError) as exc:
        _err("crf", exc)
        return 1
    print(f"wrote {args.output}")
    for line in change_report(labels, probabilities=probs, labels=coarse, logits=settings.logits):
        print(line)
    if args.verbose:
        for line in model.summary():
            print(line)
    if args.save_probs:
        path = os.path.splitext(args.output)[0] + "_probs.npy"
        save_probabilities(path, q)
        print(f"wrote {path} ({q.shape[0]}, {q.shape[1]}, {q.shape[2]}) float32")
    return 0


def _crf_preset(text):
    """The preset of ``--preset`` for the commands that always run the CRF (``crf``, ``crf-search``)."""
    from nets.deeplab import resolve_preset
    preset = resolve_preset(text)
    if preset is None:
        raise ValueError(f"--preset {text}: this command runs the CRF; name a preset, e.g. "
                         f"deeplab-v2-resnet101-voc or deeplab-v2-resnet101-voc:theta_alpha=80")
    return preset


def _listed_stems(path):
    """The stems of ``--list FILE`` (the first word of each line, as VOC's val.txt), or None without one."""
    if path is None:
        return None
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def _refine_settings(args):
    """``deeplab crf``'s :class:`~nets.app.batch.RefineSettings` (one image or many)."""
    from nets.app.batch import RefineSettings
    return RefineSettings(_crf_preset(args.preset),
                          "probs" if args.probs is not None else "labels", args.from_logits, args.gt_prob,
                          args.num_labels, args.max_side, args.backend)


def _crf_many(args, source_dir):
    """``deeplab crf`` over images and folders, each image's input found by name in ``source_dir``."""
    from nets.app import batch
    if not os.path.isdir(source_dir):
        folders = [i for i in args.inputs if os.path.isdir(i)]
        many = f"a folder of images ({folders[0]})" if folders else "several images"
        _err("crf", f"{source_dir}: with {many}, --probs and --labels name a folder holding each "
                    f"image's input by name")
        return 2
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        _err("crf", f"-o {args.output} is a file; with --probs or --labels a folder, -o names the output folder")
        return 2
    from nets.app.files import image_extensions
    if not os.path.isdir(args.output) and os.path.splitext(args.output)[1].lower() in image_extensions():
        _err("crf", f"-o {args.output}: with --probs or --labels a folder, -o names the output folder (a label "
                    f"map per image, by name), not an image file")
        return 2
    try:
        settings = _refine_settings(args)
        client = _client(args)
    except (OSError, ValueError) as exc:
        _err("crf", exc)
        return 1
    paths = _image_paths("crf", args.inputs)
    if not paths:
        return 1
    summary = _run_many("crf", args, len(paths), client, lambda **kw: batch.refine_files(
        paths, settings, source_dir, args.output, save_probs=args.save_probs, workers=args.workers,
        client=client, resume=args.resume, **kw))
    return _report_many("crf", summary, len(paths), f"refined label maps to {args.output}")


def cmd_crf_search(args):
    import json

    from nets.app import search
    from nets.app.evaluate import pair_files
    from nets.app.refine import source_file
    from nets.caffe import atomic_write
    if args.output is not None:
        problem = _output_file_problem(args.output, (".json",))
        if problem:
            _err("crf-search", problem)
            return 2
    if args.resume and args.state is None:
        _err("crf-search", "--resume needs the --state folder of the interrupted search")
        return 2
    client = None
    try:
        base = _crf_preset(args.preset)
        presets = search.grid_presets(base, search.parse_grid(args.grid) if args.grid else search.PAPER_GRID)
        stems = _listed_stems(args.list)
        if not os.path.isdir(args.probs):
            raise ValueError(f"--probs {args.probs}: no such folder (each image's NAME_probs.npy or NAME.npy)")
        pairs, errors = pair_files(args.labels, args.images, stems=stems)
        triples = []
        for label_path, image_path in pairs:
            try:
                triples.append((image_path, source_file(image_path, args.probs, "probs"), label_path))
            except ValueError as exc:
                errors.append(str(exc))
        if not triples:
            _err("crf-search", "no image has both a ground truth and probabilities:\n  " + "\n  ".join(errors))
            return 1
        num_classes = args.num_classes or search.label_count(*triples[0][:2], logits=args.from_logits)
        settings = search.SearchSettings(presets, num_classes, args.from_logits, args.backend)
        client = _client(args)
    except (OSError, ValueError) as exc:
        _err("crf-search", exc)
        return 1
    print(f"{len(presets)} settings x {len(triples)} images = {len(presets) * len(triples)} CRF runs, "
          f"from {base.name}")
    result = _run_many("crf-search", args, len(triples), client, lambda **kw: search.search_files(
        triples, settings, workers=args.workers, client=client, state_dir=args.state, resume=args.resume, **kw))
    if result is None:
        return 1
    matrices, summary = result
    errors += [o.error for o in summary.failures]
    if matrices[0].sum() == 0:
        _err("crf-search", "no pixel was counted (every image failed, or all of their ground truth is void)"
                           + ("".join(f"\n  {e}" for e in errors)))
        return 1
    ranked, baseline = search.ranking(matrices, presets)
    print(f"{summary.done} images, {matrices[0].sum()} pixels counted (255 ignored)")
    print("\n".join(search.format_ranking(ranked, baseline, args.top)))
    print(f"best: {ranked[0].name}")
    if args.output is not None:
        with atomic_write(args.output, "w") as f:
            json.dump(search.results_json(ranked, baseline, summary.done), f, indent=1)
        print(f"wrote {args.output}")
    print(summary.line())
    if errors:
        _err("crf-search", f"{len(errors)} problems:\n  " + "\n  ".join(errors))
        return 1
    return 0


def cmd_demo(args):
    from nets.app.demo import format_table, run_demo
    # Said first, on standard error: the first run in a new environment is silent while Numba
    # compiles the kernels (37 s of its 38 on 2 cores; a later run takes about 1 s in all).
    print("deeplab demo: both demo nets on their held-out images, without and with the CRF; the first "
          "run in a new environment compiles the kernels first (about 50 s on 2 cores), later runs load "
          "them from Numba's cache", file=sys.stderr, flush=True)
    try:
        result = run_demo(args.output, backend=args.backend)
    except (OSError, ValueError) as exc:
        _err("demo", exc)
        return 1
    print(f"figure: {os.path.abspath(result.figure)}")
    print("\n".join(format_table(result)))
    t = result.timings
    print(f"time: {t['total']:.2f} s in all (network {t['network']:.2f} s, CRF {t['crf']:.2f} s, "
          f"loading {t['load']:.2f} s, figure {t['figure']:.2f} s)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="deeplab",
        description="DeepLab v1/v2 in NumPy and Numba: atrous convolution, ASPP, dense CRF.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="versions, Numba threading layer, threads, CUDA, backends")
    _add_threads(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="verify the kernels on this machine against the NumPy reference")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                   help="backend compared with the reference (default: cpu)")
    p.add_argument("--quick", action="store_true", help="a few small cases only")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases (default: 0)")
    _add_threads(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("convert", help="convert a caffemodel and its prototxt into a plain .npz")
    p.add_argument("caffemodel", metavar="MODEL.caffemodel")
    p.add_argument("--prototxt", required=True, metavar="NET",
                   help="the network to run (a .prototxt, or a model name such as deeplab-v1-largefov)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--strict", action="store_true",
                   help="fail when the caffemodel holds layers the net does not have")
    p.set_defaults(func=cmd_convert)

    backends = ("auto", "numpy", "cpu", "cuda")
    p = sub.add_parser("segment", help="segment images with a DeepLab model (label PNGs, overlays, probabilities)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="deeplab-v1-largefov, deeplab-v2-resnet101[-msc], deeplab-v2-vgg16-aspp-l, "
                        "demo-largefov, demo-aspp, a converted .npz or a .prototxt")
    p.add_argument("--weights", metavar="FILE", help="the released .caffemodel or a converted .npz")
    p.add_argument("--crf", default="none", metavar="PRESET",
                   help="none (default), auto (the model's preset) or a preset name; either may be followed "
                        "by changed parameters, e.g. auto:theta_alpha=80,w_bilateral=5")
    p.add_argument("--scales", default="1", help="input scales fused by MAX, e.g. 1,0.75,0.5 "
                                                 "(single-scale nets; default 1)")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    p.add_argument("--overlay", action="store_true",
                   help="also write NAME_overlay.png: the labels over the image, a legend of the classes below")
    p.add_argument("--save-probs", action="store_true", help="also write NAME_probs.npy, (L, H, W) float32")
    p.add_argument("--verbose", action="store_true", help="time per stage for every image")
    p.add_argument("--batch", type=_positive_int, default=None, metavar="N",
                   help="images of one size among N consecutive ones share one forward pass "
                        f"(default {GPU_BATCH} on the cuda backend, else 1)")
    _add_many(p)
    p.add_argument("--resume", action="store_true",
                   help="skip the images whose outputs are all in OUT_DIR (an interrupted run's)")
    _add_threads(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="confusion matrix, per-class IoU and mIoU over a folder")
    p.add_argument("--labels", required=True, metavar="DIR", help="ground-truth label PNGs (indices, 255 void)")
    p.add_argument("--images", metavar="DIR", help="images of the same stems, segmented with --model")
    p.add_argument("--predictions", metavar="DIR", help="or: label PNGs already written (e.g. by segment)")
    p.add_argument("--list", metavar="FILE", help="only these stems, one per line (e.g. VOC's val.txt)")
    p.add_argument("--model", metavar="NAME_OR_PATH")
    p.add_argument("--weights", metavar="FILE")
    p.add_argument("--crf", default="none", metavar="PRESET", help="as for segment")
    p.add_argument("--scales", default="1")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    p.add_argument("--num-classes", type=_positive_int, default=21,
                   help="classes when the model does not name them, or with --predictions (default 21)")
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("--verbose", action="store_true", help="time per stage for every image")
    _add_many(p)
    _add_state(p, "confusion matrix")
    _add_threads(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("crf", help="refine a segmentation with DeepLab's dense CRF",
                       description="Refine one image (IMAGE, --probs P.npy or --labels COARSE.png, -o OUT.png) "
                                   "or many: images and folders of them, with --probs DIR or --labels DIR "
                                   "holding each image's NAME_probs.npy or NAME.npy, or NAME.png, and -o OUT_DIR.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--probs", metavar="P.npy|DIR", help="probabilities, (L, H, W) or (H, W, L)")
    source.add_argument("--labels", metavar="COARSE.png|DIR", help="coarse label PNG (255: unsure)")
    p.add_argument("--from-logits", action="store_true",
                   help="--probs holds pre-softmax scores (any finite values), not probabilities")
    p.add_argument("--gt-prob", type=float, default=0.7, help="confidence of a coarse label (default 0.7)")
    p.add_argument("--num-labels", type=_positive_int, default=21, help="labels with --labels (default 21)")
    p.add_argument("--preset", default="deeplab-v2-resnet101-voc",
                   help="CRF preset name (default deeplab-v2-resnet101-voc), optionally with changed "
                        "parameters: NAME:theta_alpha=80,w_bilateral=5 (w_bilateral, theta_alpha, theta_beta, "
                        "w_gaussian, theta_gamma, iterations)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png|OUT_DIR")
    p.add_argument("--save-probs", action="store_true", help="also write OUT_probs.npy, (L, H, W) float32")
    p.add_argument("--max-side", type=_positive_int, metavar="N",
                   help="refine a larger image at a reduced size, long side N, and enlarge the result "
                        "(for images whose CRF would not fit in memory: about 0.64 GB a megapixel at 21 labels)")
    p.add_argument("--verbose", action="store_true",
                   help="lattice sizes, memory and the time of each stage (many images: each image's times)")
    p.add_argument("--backend", choices=backends, default="auto")
    _add_many(p)
    p.add_argument("--resume", action="store_true",
                   help="many images: skip those whose outputs are all in OUT_DIR (an interrupted run's)")
    _add_threads(p)
    p.set_defaults(func=cmd_crf)

    p = sub.add_parser("crf-search", help="choose CRF parameters on validation images (mIoU of every setting)",
                       description="Run the dense CRF with every setting of a grid on images with probabilities "
                                   "(deeplab segment --save-probs) and ground truth, and rank the settings by "
                                   "the mean IoU over all the images, as DeepLab chose its CRF parameters. "
                                   "Without --grid: the TPAMI paper's grid, w_bilateral=3,4,5,6 "
                                   "theta_alpha=30,40,...,100 theta_beta=3,4,5,6 (128 settings).")
    p.add_argument("--images", required=True, metavar="DIR", help="the images")
    p.add_argument("--probs", required=True, metavar="DIR",
                   help="each image's probabilities, NAME_probs.npy or NAME.npy, (L, H, W) or (H, W, L)")
    p.add_argument("--labels", required=True, metavar="DIR", help="ground-truth label PNGs (indices, 255 void)")
    p.add_argument("--list", metavar="FILE", help="only these stems, one per line")
    p.add_argument("--from-logits", action="store_true",
                   help="--probs holds pre-softmax scores (any finite values), not probabilities")
    p.add_argument("--preset", default="deeplab-v2-resnet101-voc",
                   help="the parameters the grid does not set (default deeplab-v2-resnet101-voc; any name "
                        "deeplab crf --preset takes)")
    p.add_argument("--grid", action="append", metavar="PARAMETER=V1,V2,...",
                   help="a parameter and its values, e.g. --grid theta_alpha=50,60,70 --grid w_bilateral=3,4 "
                        "(w_bilateral, theta_alpha, theta_beta, w_gaussian, theta_gamma, iterations)")
    p.add_argument("--num-classes", type=_positive_int, default=None,
                   help="classes, the probabilities' labels (default: those of the first image's)")
    p.add_argument("--top", type=_positive_int, default=10, help="settings listed (default 10)")
    p.add_argument("-o", "--output", metavar="FILE.json", help="write every setting's mIoU, best first")
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("--verbose", action="store_true", help="time per stage for every image")
    _add_many(p)
    _add_state(p, "confusion matrices")
    _add_threads(p)
    p.set_defaults(func=cmd_crf_search)

    p = sub.add_parser("demo", help="both embedded demo nets on held-out images: figure and mIoU table")
    p.add_argument("-o", "--output", default="deeplab-demo", metavar="DIR",
                   help="folder of figure.png (default ./deeplab-demo)")
    p.add_argument("--backend", choices=backends, default="auto")
    _add_threads(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _apply_threads(getattr(args, "threads", None))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
