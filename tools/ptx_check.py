"""Compile every CUDA kernel for a real GPU, without one: NVVM's PTX, then ptxas's registers and spills.

    python tools/ptx_check.py [--arch sm_90] [--json ROWS.json] [--records LAUNCHES.json]

The test suite runs the CUDA kernels in Numba's simulator, which executes their Python
source: a kernel that NVVM cannot compile, or that Numba types differently for the GPU,
passes there. This closes that gap on a machine with no GPU, given NVIDIA's compilers
(``pip install 'numba-cuda[cu13]' 'cuda-toolkit[nvcc]==13.*'``, which the test extra installs):

1. **Record.** ``pytest -m cuda`` runs under ``NUMBA_ENABLE_CUDASIM=1`` with this file as a
   plugin (``-p ptx_check`` and ``DEEPLAB_PTX_RECORD=FILE``), which writes down each kernel
   launch: the kernel (module and name; for a kernel a factory makes, such as
   ``atrous.cuda.gemm_kernel(bm, bn, bk, tm, tn)``, the factory and its arguments) and the
   Numba types of its arguments. ``tests/test_cuda_simulator.py`` records this way.
2. **Compile.** This process, on Numba's real CUDA target, compiles each distinct
   (kernel, argument types) to PTX with ``numba.cuda.compile_ptx`` and assembles it with
   ``ptxas -v``. The factory kernels of the shipped launch shapes that the simulator's small
   shapes do not reach (``atrous.config.CUDA_GEMM_TILES`` and the like) are added.
3. **Report**, per kernel: registers per thread, bytes spilled to local memory, static
   shared memory, its 16-byte loads from shared memory, and the double-precision instructions
   in the PTX (a float32 kernel that promotes to float64 runs at a fraction of its speed on
   most GPUs; a few are deliberate).

Exit status: 0 if every kernel compiled and assembled, none spilled and none does float64
arithmetic (each but the few listed below with their reasons), 1 otherwise, 2 if NVIDIA's
compilers are missing. Without ``--records`` it records first (about 2.5 minutes).
"""
import argparse
import collections
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import types as pytypes
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD_ENV = "DEEPLAB_PTX_RECORD"  # where the recording child writes its launches
MISSING_TOOLCHAIN = 2  # exit status when NVVM or ptxas cannot be found


def shipped_variants():
    """Factory arguments of the launch shapes the package ships, by (module, factory)."""
    import atrous.config
    import nets.layers.config
    return {
        ("atrous.cuda", "gemm_kernel"): [tuple(tile) for _, tile in atrous.config.CUDA_GEMM_TILES],
        ("atrous.cuda", "conv_kernel"): [tuple(shape) for _, shape in atrous.config.CUDA_CONV_BLOCKS],
        ("nets.layers.cuda", "_gemm_kernel"): [(nets.layers.config.CUDA_GEMM_TILE,)],
    }


#: Kernels allowed to spill, with the reason. The classic convolution kernel (off by default,
#: kept for comparisons) with 8 x 8 outputs per thread spills, and still ran fastest of its
#: three shapes on an H100 (bench/RESULTS.md, 2026-11-27).
SPILLS_ACCEPTED = {"atrous.cuda.kernel [conv_kernel(16, 8)]": "measured fastest of the classic shapes"}

#: Kernels whose float64 arithmetic is deliberate: each mirrors a host computation done in float64.
FLOAT64_ON_PURPOSE = {
    "crf.cuda._unary_kernel": "a pixel's energies summed in float64 to test that they sum to 1",
    "crf.cuda._inverse_norm_kernel": "1 / (K 1 + tiny) in float64, rounded to float32, as on the host",
}

#: Kernels made inside a function that does not return them: the backends' one-line probes.
NOT_REBUILDABLE = {"atrous.backend._write_one [_probe()]", "crf.backend._write_one [_probe()]"}


def problems(row):
    """What is wrong with one compiled row, as a list of strings (empty: nothing)."""
    if "skipped" in row:
        return [] if row["kernel"] in NOT_REBUILDABLE else [f"not rebuilt: {row['skipped']}"]
    if "error" in row:
        return [row["error"]]
    found = []
    if row["spill_bytes"] and row["kernel"] not in SPILLS_ACCEPTED:
        found.append(f"spills {row['spill_bytes']} B")
    if row["f64"] and row["kernel"] not in FLOAT64_ON_PURPOSE:
        found.append(f"float64 arithmetic {row['f64']}")
    return found


# ------------------------------------------------------------------ 1. record (in the simulator)


PACKAGES = ("atrous", "crf", "nets")


def _decorating_frame(frame):
    """The innermost frame of the packages' own code (installed or not): where ``@cuda.jit`` was applied."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").partition(".")[0] in PACKAGES:
            return frame
        frame = frame.f_back
    return None


def _plain(value):
    """A factory argument as JSON keeps it: a NumPy scalar as its Python number."""
    return value.item() if hasattr(value, "item") else value


def _encode_type(value):
    """A JSON description of the Numba type an argument gets on the GPU: arrays by dtype,
    dimensions and layout (a simulated device array types as its host array), scalars by name."""
    import numpy as np
    from numba import typeof
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    if isinstance(value, FakeCUDAArray):
        value = value._ary
    if isinstance(value, np.ndarray):
        layout = "C" if value.flags.c_contiguous else "F" if value.flags.f_contiguous else "A"
        return ["array", value.dtype.name, value.ndim, layout]
    return ["scalar", str(typeof(value))]


def _install_recorder(path):
    """Wrap the simulator's kernel class: note where each kernel is made and how it is launched."""
    import atexit

    from numba.cuda.simulator import kernel as sim_kernel
    cls = sim_kernel.FakeCUDAKernel
    original_init, original_call = cls.__init__, cls.__call__
    launches = collections.Counter()

    def __init__(self, fn, device, *args, **kwargs):
        original_init(self, fn, device, *args, **kwargs)
        frame = _decorating_frame(sys._getframe(1))
        self._ptx_origin = None
        if frame is None or device:  # device functions compile as part of their kernels
            return
        origin = {"module": frame.f_globals.get("__name__"), "name": fn.__name__}
        if frame.f_code.co_name != "<module>":  # made by a factory: note its arguments to call it again
            info = inspect.getargvalues(frame)
            origin["factory"] = frame.f_code.co_name
            origin["factory_args"] = [_plain(info.locals[a]) for a in info.args]
        self._ptx_origin = origin

    def __call__(self, *args):
        if not self._device and not sim_kernel._kernel_context and getattr(self, "_ptx_origin", None):
            launches[json.dumps([self._ptx_origin, [_encode_type(a) for a in args]], sort_keys=True)] += 1
        return original_call(self, *args)

    cls.__init__, cls.__call__ = __init__, __call__

    def write():
        records = [dict(zip(("origin", "args"), json.loads(key)), launches=n) for key, n in launches.items()]
        Path(path).write_text(json.dumps(records, indent=1))

    atexit.register(write)


if os.environ.get(RECORD_ENV):  # imported by the recording child's pytest as its plugin
    _install_recorder(os.environ[RECORD_ENV])


def record(tests, out_path):
    """Run the ``cuda`` tests in the simulator with the recorder; return the launch records."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONUNBUFFERED="1", **{RECORD_ENV: str(out_path)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tools"), str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pytest", str(tests), "-m", "cuda", "-q", "-p", "ptx_check",
           "-p", "no:cacheprovider", "-c", str(ROOT / "setup.cfg"), "--rootdir", str(ROOT)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the recording run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    print(proc.stdout.strip().splitlines()[-1])
    return json.loads(Path(out_path).read_text())


# ------------------------------------------------------------------ 2. compile (Numba's CUDA target)


def find_toolchain():
    """(ptxas path, None), or (None, why) when NVVM, NVRTC or ptxas is missing."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
        from numba import cuda
        cuda.compile_ptx(lambda a: None, "void(float32[::1])", cc=(7, 5))  # NVVM and NVRTC load
        ptxas = find_nvidia_binary_utility("ptxas")
    except Exception as exc:  # noqa: BLE001 - any failure here means "not installed", with its reason
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    if not ptxas:
        return None, "ptxas not found (pip install 'cuda-toolkit[nvcc]==13.*')"
    return ptxas, None


def _decode_type(spec):
    import numpy as np
    from numba import types
    from numba.np.numpy_support import from_dtype
    if spec[0] == "array":
        return types.Array(from_dtype(np.dtype(spec[1])), spec[2], spec[3])
    return getattr(types, spec[1])


def _find_kernel(value, name):
    """The dispatcher called ``name`` that a factory returned, alone or in a tuple (else None)."""
    for item in value if isinstance(value, tuple) else (value,):
        if getattr(getattr(item, "py_func", None), "__name__", None) == name:
            return item
    return None


class NotRebuildable(LookupError):
    """A kernel made inside a function that does not return it (the backends' one-line probes)."""


def _kernel(origin):
    module = importlib.import_module(origin["module"])
    if "factory" not in origin:
        return getattr(module, origin["name"])
    made = getattr(module, origin["factory"])(*origin["factory_args"])
    found = _find_kernel(made, origin["name"])
    if found is None:
        raise NotRebuildable(f"{origin['module']}.{origin['factory']}() does not return {origin['name']}")
    return found


def _compile_without_a_gpu(cc):
    """Device functions compile for the current device's compute capability; with no GPU there is
    none, so Numba is told the one ``compile_ptx`` is given."""
    from numba.cuda import dispatcher
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)


_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SHARED = re.compile(r"^\s*(?:\.visible\s+)?\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]", re.M)
_F64 = re.compile(r"^\s*(?:@!?%p\d+\s+)?((?:add|sub|mul|fma|div|rcp|sqrt|min|max|neg|abs|setp|cvt)"
                  r"(?:\.\w+)*\.f64)\b", re.M)


def compile_one(origin, arg_specs, arch, ptxas, workdir):
    """Compile one (kernel, argument types) to PTX and assemble it; return its numbers."""
    from numba import cuda, types
    cc = tuple(int(c) for c in arch.removeprefix("sm_"))
    _compile_without_a_gpu(cc)
    signature = types.void(*[_decode_type(s) for s in arg_specs])
    ptx, _ = cuda.compile_ptx(_kernel(origin).py_func, signature, cc=cc)
    source = Path(workdir) / "kernel.ptx"
    source.write_text(ptx)
    # -c: a relocatable object, so that a grid-wide barrier's calls into cudadevrt may stay unresolved
    proc = subprocess.run([ptxas, f"-arch={arch}", "-v", "-c", "-o", os.devnull, str(source)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas: {proc.stderr.strip()[-500:]}")
    report = proc.stdout + proc.stderr
    return {"registers": max(int(m) for m in _REGISTERS.findall(report)),
            "spill_bytes": max((int(a) + int(b) for a, b in _SPILLS.findall(report)), default=0),
            "shared_bytes": sum(int(m) for m in _SHARED.findall(ptx)),
            "shared_v4_loads": len(re.findall(r"\bld\.shared\.v4\.", ptx)),
            "f64": dict(collections.Counter(m.group(1) for m in _F64.finditer(ptx)))}


def _label(origin):
    name = f"{origin['module']}.{origin['name']}"
    if "factory" in origin:
        name += f" [{origin['factory']}{tuple(origin['factory_args'])}]"
    return name


def compile_records(records, arch, ptxas):
    """One row per distinct (kernel, argument types) of ``records``, with the shipped variants."""
    todo = {}
    for r in records:
        todo.setdefault(json.dumps([r["origin"], r["args"]], sort_keys=True), (r["origin"], r["args"], "tests"))
    shipped = shipped_variants()
    for origin, arg_specs, _ in list(todo.values()):
        for variant in shipped.get((origin["module"], origin.get("factory")), ()):
            o = dict(origin, factory_args=list(variant))
            todo.setdefault(json.dumps([o, arg_specs], sort_keys=True), (o, arg_specs, "shipped"))
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for origin, arg_specs, source in sorted(todo.values(), key=lambda t: (_label(t[0]), t[1])):
            row = {"kernel": _label(origin), "origin": origin, "args": arg_specs, "from": source}
            try:
                row.update(compile_one(origin, arg_specs, arch, ptxas, workdir))
            except NotRebuildable as exc:
                row["skipped"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported per kernel; the others still compile
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                row["error"] = f"{type(exc).__name__}: {' | '.join(lines[:4])[:600]}"
            rows.append(row)
    return rows


def _line(row):
    if "skipped" in row:
        return f"skip  {row['kernel']}: {row['skipped']}"
    if "error" in row:
        return f"FAIL  {row['kernel']}: {row['error']}"
    f64 = " ".join(f"{k} x{v}" for k, v in sorted(row["f64"].items())) or "-"
    flag = "SPILL" if row["spill_bytes"] else "ok"
    return (f"{flag:5s} {row['kernel']}: {row['registers']} registers, {row['spill_bytes']} B spilled, "
            f"{row['shared_bytes']} B shared ({row['shared_v4_loads']} 16-byte loads), float64: {f64}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="sm_90", help="the GPU architecture (default sm_90: H100, H200)")
    parser.add_argument("--records", help="the launches recorded by an earlier run (JSON); else record now")
    parser.add_argument("--tests", default=str(ROOT / "tests"), help="the tests whose launches to record")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("run without NUMBA_ENABLE_CUDASIM=1: this compiles for Numba's real CUDA target")
    try:
        import atrous  # noqa: F401 - the installed package, if there is one
    except ImportError:
        sys.path.insert(0, str(ROOT))
    ptxas, missing = find_toolchain()
    if missing:
        print(f"NVIDIA's compilers are not usable: {missing}", file=sys.stderr)
        return MISSING_TOOLCHAIN
    if args.records:
        records = json.loads(Path(args.records).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            records = record(args.tests, Path(tmp) / "launches.json")
    rows = compile_records(records, args.arch, ptxas)
    for row in rows:
        print(_line(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if problems(r)]
    for row in bad:
        print(f"problem: {row['kernel']}: {'; '.join(problems(row))}")
    print(f"{len(rows)} compilations of {len({r['kernel'] for r in rows})} kernels for {args.arch}: "
          f"{len(bad)} with problems, {sum('skipped' in r for r in rows)} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
