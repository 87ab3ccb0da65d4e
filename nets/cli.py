"""The ``deeplab`` command (also ``python -m nets.cli``).

This is the only module that parses arguments. Heavy imports (numpy, numba)
happen after parsing, so that ``--threads`` can set the thread counts of Numba
and of the BLAS library before either starts its thread pool.
"""
import argparse
import os
import sys


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_threads(parser):
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="threads for Numba kernels and BLAS (default: NUMBA_NUM_THREADS "
                             "or all cores)")


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
    from nets.environment import describe
    rows = describe()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_check(args):
    from nets.selfcheck import run_checks
    return run_checks(backend=args.backend, quick=args.quick, seed=args.seed, out=sys.stdout)


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
