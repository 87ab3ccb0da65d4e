"""Running a Caffe network: layers in file order over named blobs, reshaped to every input.

:class:`Net` holds a network description (:class:`~nets.caffe.NetSpec`) and its learned
blobs, and runs it the way Caffe's ``Net::Forward`` does:

* the TEST-phase net (``include``/``exclude`` rules applied);
* layers in file order; a top named like its bottom is written **in place**, so a
  blob's value is the one the *last* layer writing it left (after ReLU, Dropout,
  BatchNorm, Scale), as Caffe's ``net.blobs[name]`` holds after the pass;
* the net is reshaped to the input as Caffe's ``Net::Reshape`` does: declared
  input shapes (``input_dim``, ``Input`` shapes, ``crop_size``) are defaults used
  only to check the weights early;
* ``Input``, ``Data``, ``ImageData`` and ``ImageSegData`` layers are where the
  caller's arrays go in; ImageSegData's ``data_dim`` top is
  ``(min(H, crop), min(W, crop))``; MatWrite, SegAccuracy and Silence are not run;
* weights are matched by layer name, shared blobs (``param { name }``) resolved
  across the layers sharing them (:mod:`nets.engine.weights`);
* a Convolution followed in place by BatchNorm and Scale is folded into one
  convolution at load time (``fold=True``, the default), which changes nothing a
  caller can observe: the convolution's top is overwritten by both anyway;
* a convolution does the shortcut sum (Eltwise SUM) and the ReLU that follow it as it
  writes its output (``fuse=True``, the default; :mod:`atrous.epilogue`): the same
  arithmetic, no pass of their own over the blob. Only where no caller and no other
  layer can see the difference: the convolution's own top is neither read by
  another layer nor asked for (``outputs``) when the sum takes it over.

Example::

    net = Net.load("lenet_iter_10000.caffemodel", prototxt="lenet.prototxt")
    scores = net.forward(images)["ip2"]            # images: (N, 1, 28, 28) float32
"""
import contextlib
import os
import time

import numpy as np

import atrous
from atrous.backend import is_device_array, resolve_backend
from nets.caffe import is_npz, read_prototxt
from nets.engine.ops import INPUT_TYPES, SKIPPED_TYPES, LayerError, batchnorm_eps, make_ops
from nets.engine.weights import check_blobs, load_weights, resolve_weights, weights_by_layer
from nets.layers import config as layers_config, fold_batchnorm_scale


class _Step:
    """One layer to run and the op that runs it."""

    __slots__ = ("layer", "op")

    def __init__(self, layer, op):
        self.layer, self.op = layer, op


class _Epilogue:
    """What a convolution does as it writes (:mod:`atrous.epilogue`) for the layers after it.

    ``residual``: the blob an absorbed Eltwise SUM adds (None: no sum); ``relu_slope``: an
    absorbed ReLU's negative slope (None: no ReLU); ``top``: the blob the result is (the
    Eltwise's top, else the convolution's); ``absorbed``: the step indices that no longer run.
    """

    __slots__ = ("residual", "relu_slope", "top", "absorbed")

    def __init__(self, residual, relu_slope, top, absorbed):
        self.residual, self.relu_slope, self.top, self.absorbed = residual, relu_slope, top, absorbed


class Net:
    """A Caffe network with its weights, ready to run.

    Build one with :meth:`load` (a converted ``.npz``, or a caffemodel and its
    prototxt) or :meth:`from_spec`.

    Attributes
    ----------
    spec : NetSpec
        The TEST-phase network that runs.
    inputs : list of str
        Blobs the caller provides (the first one is ``data`` in DeepLab's nets).
    outputs : list of str
        Blobs no later layer reads: what :meth:`forward` returns by default.
    blobs : list of str
        Every blob a forward pass computes, in order of first appearance.
    declared_shapes : dict of str to tuple of int or None
        The input shapes the network file declares (``input_dim``, ``Input`` shapes,
        a data layer's ``crop_size``), None where it declares none. Defaults only:
        the net runs at any input size.
    weight_cache : atrous.WeightCache or None
        What the convolutions derive from the weights, made on the first forward pass
        and kept: on the CPU Winograd's transformed filters (16/9 to 4x the 3x3 weights'
        memory), on the GPU the GEMM kernel's relayout (1x, in device memory);
        ``weight_cache.nbytes()``. ``weight_cache.clear()`` frees it; None derives them
        at every pass instead.
    fuse : bool
        Convolutions do the shortcut sums and ReLUs after them as they write (see the
        module docstring); False runs every layer on its own.
    """

    def __init__(self, spec, weights=None, fold=True, fuse=True):
        self.spec = spec.for_phase("TEST")
        self._ops = make_ops(self.spec.dialect)
        self.declared_shapes = {}
        self._input_layers = {}
        self._steps = []
        known = set()
        for name, shape in zip(self.spec.inputs, self.spec.input_shapes or [None] * len(self.spec.inputs)):
            self.declared_shapes[name] = tuple(shape) if shape else None
            known.add(name)
        for layer in self.spec.layers:
            if layer.type in SKIPPED_TYPES:
                continue
            if layer.type in INPUT_TYPES:
                self._add_input_layer(layer)
                known.update(layer.tops)
                continue
            op = self._ops.get(layer.type)
            if op is None:
                raise ValueError(f"layer {layer.name!r} has type {layer.type!r} (written "
                                 f"{layer.source_type or layer.type!r}), which is not supported; supported "
                                 f"types: {sorted(self._ops) + list(INPUT_TYPES) + list(SKIPPED_TYPES)}")
            for bottom in layer.bottoms:
                if bottom not in known:
                    raise ValueError(f"layer {layer.name!r} ({layer.type}) reads blob {bottom!r}, which no "
                                     f"earlier layer produces and which is not a net input; known blobs: "
                                     f"{sorted(known)}")
            known.update(layer.tops)
            self._steps.append(_Step(layer, op))
        self.inputs = list(self.declared_shapes)
        if not self.inputs:
            raise ValueError("the net has no input: expected NetParameter input fields or an Input, Data or "
                             "ImageSegData layer")
        self._weights = resolve_weights([s.layer for s in self._steps], weights_by_layer(weights))
        self._checked = {}
        self._folded_cache = {}
        self._device_cache = {}
        self.weight_cache = atrous.WeightCache()
        self._shape_cache = {}
        self._fold_groups = self._find_fold_groups() if fold else {}
        self.fuse = fuse
        self._epilogue_plans = {}
        self.outputs = self._find_outputs()
        self.blobs = list(dict.fromkeys(
            self.inputs + list(self._input_layers) + [t for s in self._steps for t in s.layer.tops]))
        defaults = [self.declared_shapes[name] for name in self.inputs]
        if weights is not None and all(d is not None for d in defaults):
            self.infer_shapes(dict(zip(self.inputs, defaults)), context="for the declared input shape")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, spec, weights=None, fold=True, fuse=True):
        """A net from a parsed network and its weights.

        Parameters
        ----------
        spec : NetSpec
            The network (its TEST phase runs).
        weights : NetSpec or mapping of str to sequence of ndarray, optional
            A decoded caffemodel, or blobs by layer name. Layers absent from the net are
            ignored, as Caffe ignores them.
        fold : bool
            Fold BatchNorm + Scale into the preceding convolution where that is exact.
        fuse : bool
            Let convolutions do the shortcut sums and ReLUs after them (:attr:`fuse`).
        """
        return cls(spec, weights, fold, fuse)

    @classmethod
    def load(cls, path, prototxt=None, fold=True, fuse=True, **template_values):
        """A net from a converted ``.npz`` (see :func:`nets.convert`) or a caffemodel and its prototxt.

        Parameters
        ----------
        path : str or PathLike
            ``.npz`` written by :func:`nets.convert`, or a ``.caffemodel``.
        prototxt : str or PathLike, optional
            The network to run (required with a caffemodel; with an ``.npz`` it replaces
            the stored definition).
        fold, fuse : bool
            As for :meth:`from_spec`.
        **template_values
            Values for ``${...}`` placeholders in the prototxt (``NUM_LABELS=21`` by default).
        """
        if prototxt is None and os.path.isfile(path) and not is_npz(path):
            raise ValueError(f"{os.fspath(path)}: a caffemodel needs its network definition: pass "
                             f"prototxt=... (the caffemodel holds the training net)")
        stored, weights = load_weights(path)
        spec = stored if prototxt is None else read_prototxt(prototxt, **template_values)
        return cls(spec, weights, fold, fuse)

    def _add_input_layer(self, layer):
        """Record an input layer's tops and their declared (default) shapes."""
        if layer.type == "Input":
            shapes = [tuple(s.get("dim", [])) for s in layer.params.get("input_param", {}).get("shape", [])]
            for i, top in enumerate(layer.tops):
                shape = shapes[i] if i < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
                self.declared_shapes[top] = shape or None
            return
        transform = layer.params.get("transform_param", {})
        crop = int(transform.get("crop_size", 0))
        batch = int(layer.params.get("image_data_param", layer.params.get("data_param", {})).get("batch_size", 1))
        top = layer.tops[0]
        channels = 3 if layer.type in ("ImageData", "ImageSegData") else None
        self.declared_shapes[top] = (batch, channels, crop, crop) if crop and channels else None
        self._input_layers[top] = layer
        if layer.type == "ImageSegData" and len(layer.tops) > 2:
            self._input_layers[layer.tops[2]] = layer

    def _find_outputs(self):
        """Blobs that no later layer reads (Caffe's net outputs), skipped layers ignored."""
        consumed, outputs = set(), []
        for step in reversed(self._steps):
            for top in step.layer.tops:
                if top not in consumed and top not in outputs:
                    outputs.append(top)
            consumed.update(b for b in step.layer.bottoms if b not in step.layer.tops)
        return outputs[::-1]

    def _find_fold_groups(self):
        """``{conv step index: (bn step index, scale step index)}`` where folding is exact.

        Exact when the convolution's top is next written in place by a BatchNorm and then
        by a Scale, with no layer reading it in between (it would see the unnormalised value).
        """
        groups = {}
        steps = self._steps
        for i, step in enumerate(steps):
            layer = step.layer
            if layer.type != "Convolution" or len(layer.tops) != 1 or layer.tops[0] in layer.bottoms:
                continue
            top = layer.tops[0]
            users = [j for j in range(i + 1, len(steps))
                     if top in steps[j].layer.bottoms or top in steps[j].layer.tops][:2]
            if len(users) != 2:
                continue
            bn, sc = (steps[j].layer for j in users)
            if (bn.type == "BatchNorm" and bn.bottoms == [top] and bn.tops == [top]
                    and sc.type == "Scale" and sc.bottoms == [top] and sc.tops == [top]):
                groups[i] = tuple(users)
        return groups

    def _epilogues(self, wanted):
        """``{conv step index: _Epilogue}`` for a pass that returns the blobs ``wanted``.

        A convolution (top t) takes over:

        * an Eltwise SUM of t and one other blob s, coefficients 1, into a new blob e,
          when it is the next layer to touch t, no later layer touches t, t is not
          wanted, and no layer in between writes s or touches e; the convolution
          then writes e (s was written before it: nothing in between writes s);
        * then (or on t when there is no sum) a ReLU in place on the result, when it
          is the next layer to touch it.

        BatchNorm and Scale folded into the convolution do not run, so they do not count.
        """
        steps, skip = self._steps, {j for pair in self._fold_groups.values() for j in pair}

        def touches(j, name):
            return name in steps[j].layer.bottoms or name in steps[j].layer.tops

        def next_touch(i, name):
            return next((j for j in range(i + 1, len(steps)) if j not in skip and touches(j, name)), None)

        plan = {}
        for i, step in enumerate(steps):
            layer = step.layer
            if layer.type != "Convolution" or len(layer.tops) != 1 or layer.tops[0] in layer.bottoms:
                continue
            top, residual, absorbed = layer.tops[0], None, []
            j = next_touch(i, top)
            if j is not None and top not in wanted and _is_shortcut_sum(steps[j].layer, top):
                other = next(b for b in steps[j].layer.bottoms if b != top)
                out = steps[j].layer.tops[0]
                if not (any(touches(k, top) for k in range(j + 1, len(steps)))
                        or any(other in steps[k].layer.tops or touches(k, out) for k in range(i + 1, j))):
                    top, residual, absorbed = out, other, [j]
            k = next_touch(absorbed[-1] if absorbed else i, top)
            relu = None if k is None else steps[k].layer
            relu_slope = None
            if relu is not None and relu.type == "ReLU" and relu.bottoms == relu.tops == [top]:
                relu_slope = float(relu.params.get("relu_param", {}).get("negative_slope", 0.0))
                absorbed.append(k)
            if absorbed:
                plan[i] = _Epilogue(residual, relu_slope, top, absorbed)
        return plan

    def fused_layers(self, outputs=None):
        """``{convolution: [layers it does as it writes]}`` for a pass returning ``outputs``
        (default :attr:`outputs`); empty when :attr:`fuse` is False."""
        plan = self._epilogue_plan(self.outputs if outputs is None else outputs)
        return {self._steps[i].layer.name: [self._steps[j].layer.name for j in e.absorbed] for i, e in plan.items()}

    def _epilogue_plan(self, wanted):
        """:meth:`_epilogues`, kept per set of wanted blobs (none when :attr:`fuse` is False)."""
        if not self.fuse:
            return {}
        key = frozenset(wanted)
        if key not in self._epilogue_plans:
            self._epilogue_plans[key] = self._epilogues(key)
        return self._epilogue_plans[key]

    @property
    def layers(self):
        """The layers that run, in order (input and skipped layers left out): ``list of LayerSpec``."""
        return [step.layer for step in self._steps]

    @property
    def folded_layers(self):
        """Names of the convolutions that BatchNorm and Scale are folded into."""
        return [self._steps[i].layer.name for i in self._fold_groups]

    # ------------------------------------------------------------------ shapes

    def infer_shapes(self, inputs, context=None, check=True):
        """Every blob's shape for inputs of the given shapes (and check the weights).

        Parameters
        ----------
        inputs : dict of str to tuple of int
            Shapes of the input blobs; ``data_dim`` may be left out.
        context : str, optional
            Appended to error messages.
        check : bool
            Check the weights (False: shapes only, e.g. for a net without weights).

        Returns
        -------
        dict of str to tuple of int

        Raises
        ------
        ValueError
            A layer that cannot take its inputs, or weights of the wrong shape or missing:
            the message names the layer and both shapes.
        """
        if not check:
            return self._infer(inputs, "", check=False)[0]
        key = tuple(sorted((k, tuple(v)) for k, v in inputs.items()))
        if key not in self._shape_cache:
            context = context or f"for input shapes {dict(inputs)}"
            self._shape_cache[key] = self._infer(inputs, context, check=True)[0]
        return self._shape_cache[key]

    def checked_weights(self, inputs=None):
        """Every layer's learned blobs in Caffe's shapes, checked for inputs of these shapes.

        Parameters
        ----------
        inputs : dict of str to tuple of int, optional
            Input shapes; by default the declared ones (:attr:`declared_shapes`).

        Returns
        -------
        dict of str to list of ndarray
            float32 blobs by layer name, for the layers that take blobs.

        Raises
        ------
        ValueError
            No input shape given or declared, or weights missing or of the wrong shape.
        """
        if inputs is None:
            declared = [self.declared_shapes.get(name) for name in self.inputs]
            if any(d is None for d in declared):
                raise ValueError(f"the net declares no complete input shape ({dict(zip(self.inputs, declared))}); "
                                 f"pass the input shape, (N, C, H, W)")
            inputs = dict(zip(self.inputs, declared))
        self.infer_shapes(inputs, context=f"for input shapes {dict(inputs)}")
        return {layer.name: list(self._checked[layer.name]) for layer in self.layers if layer.name in self._checked}

    def param_shapes(self, inputs):
        """The learned blobs every layer needs for inputs of these shapes (weights not consulted).

        Returns
        -------
        dict of str to list of tuple of int
            Shapes by layer name, in blob order, for the layers that take blobs.
        """
        return self._infer(inputs, "", check=False)[1]

    def _infer(self, inputs, context, check):
        """Propagate shapes layer by layer (Caffe's ``Reshape``); check or collect blob shapes."""
        shapes = {name: tuple(int(d) for d in s) for name, s in inputs.items()}
        for top, layer in self._input_layers.items():
            if top != layer.tops[0] and top not in shapes and layer.tops[0] in shapes:
                shapes[top] = (shapes[layer.tops[0]][0], 1, 1, 2)  # data_dim
        for name in self.inputs:
            if name not in shapes:
                raise ValueError(f"input blob {name!r} is not given; the net's inputs are {self.inputs}")
        expected_by_layer = {}
        for step in self._steps:
            layer = step.layer
            missing = [b for b in layer.bottoms if b not in shapes]
            if missing:
                raise ValueError(f"layer {layer.name!r} ({layer.type}) reads {missing}, which have no value "
                                 f"(a data layer's label is not an input)")
            bottom_shapes = [shapes[b] for b in layer.bottoms]
            expected = step.op.param_shapes(layer, bottom_shapes)
            if expected:
                expected_by_layer[layer.name] = expected
            if check and (expected or self._weights.get(layer.name)):
                checked = check_blobs(
                    layer, self._weights.get(layer.name), expected,
                    f"(its input {layer.bottoms[0]!r} has shape {bottom_shapes[0]}; {context})")
                before = self._checked.get(layer.name)
                # The weights never change: for blobs of the same shapes keep the arrays of the first
                # check, so that what is cached by array (device copies, Winograd's filters) stays valid
                # for every input size instead of being made again for each.
                if before is None or [b.shape for b in before] != [b.shape for b in checked]:
                    self._checked[layer.name] = checked
            tops = step.op.top_shapes(layer, bottom_shapes)
            shapes.update(zip(layer.tops, tops))
        return shapes, expected_by_layer

    def _fused_blobs(self, index):
        """Folded weight and bias of the convolution at ``index`` (cached per shared blob set)."""
        bn_index, scale_index = self._fold_groups[index]
        conv, bn, sc = (self._steps[i].layer for i in (index, bn_index, scale_index))
        # Keyed by the stored arrays themselves: towers sharing their blobs share one fold.
        key = tuple(id(b) for layer in (conv, bn, sc) for b in self._weights.get(layer.name, []))
        key += (batchnorm_eps(bn),)
        if key not in self._folded_cache:
            conv_blobs = self._checked[conv.name]
            bias = conv_blobs[1] if len(conv_blobs) > 1 else None
            self._folded_cache[key] = list(fold_batchnorm_scale(
                conv_blobs[0], bias, self._checked[bn.name], self._checked[sc.name], eps=batchnorm_eps(bn)))
        return self._folded_cache[key]

    # ------------------------------------------------------------------ forward

    def forward(self, data, outputs=None, backend="auto", timings=None):
        """Run the net.

        Parameters
        ----------
        data : ndarray of shape (N, C, H, W), float32, or dict of str to ndarray
            The first input blob (``data``), or every input by name. Any N, H, W:
            the net is reshaped to it. ImageSegData's ``data_dim`` is
            ``(min(H, crop), min(W, crop))`` unless given in the dict. CUDA device
            arrays are accepted by the ``"cuda"`` backend.
        outputs : sequence of str, optional
            Blobs to return (default :attr:`outputs`): their values after the last
            layer that writes them, as Caffe's ``net.blobs[name]``.
        backend : {"numpy", "cpu", "cuda", "auto"}
            Where every layer runs. ``"cuda"`` keeps the activations on the GPU; the
            results come back as NumPy arrays when the input was one.
        timings : dict, optional
            A profile: each layer that runs adds its seconds under its name
            (``timings[name] += seconds``). On the GPU the device is synchronised
            before and after every layer, so the pass runs one layer at a time and
            takes longer than without (bench/profile.py). BatchNorm and Scale folded
            into a convolution, and the sums and ReLUs it does as it writes, count in
            the convolution's time.

        Returns
        -------
        dict of str to ndarray
            float32 (ArgMax indices included, as Caffe stores them).
        """
        arrays = dict(data) if isinstance(data, dict) else {self.inputs[0]: data}
        unknown = sorted(set(arrays) - set(self.inputs) - set(self._input_layers))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}; the net's inputs are {self.inputs}")
        wanted = list(self.outputs if outputs is None else ([outputs] if isinstance(outputs, str) else outputs))
        bad = [name for name in wanted if name not in self.blobs]
        if bad:
            raise ValueError(f"no blob named {bad} in the net; its blobs are {self.blobs}")
        host_in = not any(is_device_array(a) for a in arrays.values())
        for name, a in list(arrays.items()):
            arrays[name] = self._prepare_input(name, a)
        backend = resolve_backend(backend, *arrays.values())
        self._add_data_dim(arrays)
        self.infer_shapes({k: tuple(v.shape) for k, v in arrays.items()})
        if backend == "cuda":
            from nets.engine import device  # numba.cuda is loaded only for the CUDA backend
            # An input that no layer reads and nobody asked for (DeepLab-v2's data_dim and label, for
            # a Silence layer) stays on the host: a copy from the host waits for all queued work.
            read = {b for step in self._steps for b in step.layer.bottoms} | set(wanted)
            arrays = {k: device.to_device(v) if k in read else v for k, v in arrays.items()}
        values = dict(arrays)
        given = {id(a) for a in values.values()}  # the caller's arrays are never overwritten
        last_use = self._last_uses(wanted)
        plan = self._epilogue_plan(wanted)
        # BatchNorm and Scale folded into their convolution, and the layers it does as it writes, do not run
        skip = {j for pair in self._fold_groups.values() for j in pair}
        skip.update(j for epilogue in plan.values() for j in epilogue.absorbed)
        sync = _synchronise(backend) if timings is not None else None
        with _held_frees(backend) as hold:
            for index, step in enumerate(self._steps):
                if index not in skip:
                    epilogue = plan.get(index)
                    tops = [epilogue.top] if epilogue else step.layer.tops
                    if sync is not None:
                        sync()
                        start = time.perf_counter()
                    outs = self._run(index, step, values, backend, given, epilogue)
                    if hold is not None:  # the GPU's device memory: count what is new (not a bottom reused)
                        bottoms = [values[b] for b in step.layer.bottoms]
                        hold.allocated(sum(o.nbytes for o in outs if not any(o is b for b in bottoms)))
                    values.update(zip(tops, outs))
                    if sync is not None:
                        sync()
                        name = step.layer.name
                        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
                for name in last_use.get(index, ()):
                    values.pop(name, None)
        result = {name: values[name] for name in wanted}
        if backend == "cuda" and host_in:
            from nets.engine import device
            result = {k: device.to_host(v) for k, v in result.items()}
        return result

    def _run(self, index, step, values, backend, given=frozenset(), epilogue=None):
        """The tops of one layer; errors from the kernels are prefixed with the layer's name.

        ``epilogue``: for a convolution, the shortcut sum and ReLU it does as it writes.

        An in-place ReLU (``top`` = ``bottom``, as every ReLU of DeepLab's nets) overwrites its
        bottom, as in Caffe, unless the array is one the caller passed or another blob holds
        it too: at 513x513 a new array per ReLU cost more than the rectification (conv1's
        67 MB outputs, faulted in afresh).
        """
        layer = step.layer
        blobs = self._fused_blobs(index) if index in self._fold_groups else self._checked.get(layer.name, [])
        extra = {}
        if layer.type == "ReLU" and layer.tops == layer.bottoms:
            bottom = values[layer.bottoms[0]]
            extra["inplace"] = id(bottom) not in given and sum(v is bottom for v in values.values()) == 1
        if layer.type == "Convolution":
            if backend == "cuda":
                from nets.engine import device
                blobs = device.cached(blobs, self._device_cache)
            # Winograd's transformed filters (CPU) or the GEMM kernel's relayout (GPU), once per weight set
            extra["cache"] = self.weight_cache
            if epilogue is not None:
                extra["residual"] = None if epilogue.residual is None else values[epilogue.residual]
                extra["relu_slope"] = epilogue.relu_slope
        try:
            return step.op.forward(layer, blobs, [values[b] for b in layer.bottoms], backend, **extra)
        except LayerError:
            raise
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {layer.name!r} ({layer.type}): {exc}") from exc

    def _prepare_input(self, name, a):
        if is_device_array(a):
            return a
        a = np.asarray(a)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"input {name!r} must hold real numbers (float32), got dtype {a.dtype}")
        if a.ndim != 4 or 0 in a.shape:
            raise ValueError(f"input {name!r} must be a non-empty (N, C, H, W) array, got shape {a.shape}")
        with np.errstate(over="ignore"):  # a value beyond float32 is said below, in words
            a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():  # every score would be NaN, silently
            bad = int(a.size - np.isfinite(a).sum())
            raise ValueError(f"input {name!r} holds {bad} NaN or infinite value(s) (as float32) of {a.size}; "
                             f"expected finite numbers")
        return a

    def _add_data_dim(self, arrays):
        """ImageSegData's third top: the real image size, at most the crop size (DeepLab v2)."""
        for top, layer in self._input_layers.items():
            if top == layer.tops[0] or top in arrays or layer.tops[0] not in arrays:
                continue
            n, _, h, w = arrays[layer.tops[0]].shape
            crop = int(layer.params.get("transform_param", {}).get("crop_size", 0)) or max(h, w)
            arrays[top] = np.tile(np.array([min(h, crop), min(w, crop)], np.float32), (n, 1)).reshape(n, 1, 1, 2)

    def _last_uses(self, wanted):
        """``{step index: blobs no later step reads or writes}``, so they can be freed."""
        last = {}
        for index, step in enumerate(self._steps):
            for name in list(step.layer.bottoms) + list(step.layer.tops):
                last[name] = index
        out = {}
        for name, index in last.items():
            if name not in wanted:
                out.setdefault(index, []).append(name)
        return out


def _held_frees(backend):
    """The context a pass runs its layers in: on the GPU, device frees held back up to
    ``nets.layers.config.CUDA_HOLD_FREES_BYTES`` (see :class:`nets.engine.device.HeldFrees`);
    elsewhere, or with a budget of 0, nothing (it gives None)."""
    if backend == "cuda" and layers_config.CUDA_HOLD_FREES_BYTES > 0:
        from nets.engine import device
        return device.HeldFrees(layers_config.CUDA_HOLD_FREES_BYTES)
    return contextlib.nullcontext()


def _synchronise(backend):
    """A function that waits for the backend's queued work (the GPU's; the CPU's is done on return)."""
    if backend == "cuda":
        from numba import cuda
        return cuda.synchronize
    return lambda: None


def _is_shortcut_sum(layer, blob):
    """Whether ``layer`` is an Eltwise SUM, coefficients 1, of ``blob`` and one other blob into a new one."""
    p = layer.params.get("eltwise_param", {})
    coeffs = p.get("coeff") or []
    return (layer.type == "Eltwise" and str(p.get("operation", "SUM")).upper() == "SUM"
            and len(layer.bottoms) == 2 and blob in layer.bottoms and len(set(layer.bottoms)) == 2
            and all(float(c) == 1.0 for c in coeffs) and len(layer.tops) == 1
            and layer.tops[0] not in layer.bottoms)
