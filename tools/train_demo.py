"""Train, export and verify the embedded demo models (DeepLab-LargeFOV and DeepLab-ASPP in miniature).

Usage (from the repository root, torch installed; the recorded run took 29 minutes of
wall time on 2 cores shared with other jobs, see nets/data/demo/TRAINING.md)::

    python tools/train_demo.py --seed 0 --out nets/data/demo

Writes into ``--out``:

* ``shapes_largefov.prototxt`` / ``shapes_largefov.caffemodel`` and
  ``shapes_aspp.prototxt`` / ``shapes_aspp.caffemodel``: deploy prototxts and real
  new-dialect caffemodels written by :mod:`nets.caffe`;
* ``heldout/image_XX.png`` (RGB) and ``heldout/label_XX.png`` (VOC palette): held-out
  samples 0..7 of :mod:`nets.deeplab.shapes_dataset`;
* ``demo.json``: classes, input size, preprocessing, the models and their scores;
* ``training_log.json``: every number of the run (losses, validation and held-out mIoU,
  export errors, times), which ``TRAINING.md`` summarises.

The nets follow DeepLab's form exactly, so that the exported graph is plain Caffe:
cross-correlation convolutions with explicit pad and dilation, ReLU, MAX pooling 3x3
stride 2 pad 1 in Caffe's ceil mode (97 -> 49 -> 25 -> 13), conv5 at rate 2, then
either a LargeFOV head (fc6 3x3 at rate 3, fc7 1x1, fc8 1x1) or an ASPP head (four
fc6/fc7/fc8 branches at rates 1, 2, 3, 4, the paper's 6:12:18:24 scaled to a 13x13 score
map, summed by Eltwise SUM), and an Interp zoom 8 (13 -> 97). Input: DeepLab's
preprocessing (BGR, minus the mean 104.008, 116.669, 122.675, no scaling), 97x97.

Training puts a batch normalisation after every convolution but fc8 (a plain VGG-like
net without it needs several times more steps); the export folds it into the
convolution's weights and bias, so the deployed nets are plain Caffe.

Loss: per-pixel cross-entropy of the scores after the Interp (bilinear with
align_corners=True, which is Caffe's Interp for zoom 8: source position i/8 exactly)
against the full-resolution labels. The export is verified against OpenCV's own Caffe
importer (and against :class:`nets.Net` where it exists) within 1e-4 x max|score|.

This script is the only place in the project that uses torch.
"""
import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nets.app.evaluate import confusion_matrix, mean_iou
from nets.app.imageio import save_image_atomic, write_label_png
from nets.caffe import LayerSpec, NetSpec, atomic_write, format_prototxt, read_caffemodel, write_caffemodel
from nets.deeplab import shapes_dataset

MEAN_BGR = (104.008, 116.669, 122.675)
SIZE = shapes_dataset.DEFAULT_SIZE
NUM_CLASSES = len(shapes_dataset.CLASSES)
WIDTH = 64          # channels of fc6 / fc7 (per ASPP branch)
LARGEFOV_RATE = 3
ASPP_RATES = (1, 2, 3, 4)
# (name, in channels, out channels, dilation) of the trunk's 3x3 convolutions; "pool" marks a pooling
TRUNK = [("conv1_1", 3, 16, 1), "pool1",
         ("conv2_1", 16, 32, 1), ("conv2_2", 32, 32, 1), "pool2",
         ("conv3_1", 32, 64, 1), ("conv3_2", 64, 64, 1), "pool3",
         ("conv5_1", 64, 64, 2), ("conv5_2", 64, 64, 2)]
SHIPPED_HELDOUT = 8


# ----------------------------------------------------------------------------- geometry

def caffe_pool_size(size, kernel=3, stride=2, pad=1):
    """Caffe's ceil-mode pooling size with its clip rule (FACTS.md (d))."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def check_geometry():
    """Caffe's pooling sizes equal torch's ceil mode here, and zoom 8 lands on 97."""
    size, sizes = SIZE, [SIZE]
    for _ in range(3):
        torch_out = F.max_pool2d(torch.zeros(1, 1, size, size), 3, 2, 1, ceil_mode=True).shape[-1]
        if torch_out != caffe_pool_size(size):
            raise AssertionError(f"pooling {size}: torch gives {torch_out}, Caffe {caffe_pool_size(size)}")
        size = torch_out
        sizes.append(size)
    if size + (size - 1) * 7 != SIZE:
        raise AssertionError(f"Interp zoom 8 of {size} gives {size + (size - 1) * 7}, not {SIZE}")
    return sizes


# ----------------------------------------------------------------------------- the nets

class DemoNet(torch.nn.Module):
    """The trunk plus a LargeFOV (one rate) or ASPP (several rates) head."""

    def __init__(self, rates):
        super().__init__()
        self.rates = tuple(rates)
        self.convs = torch.nn.ModuleDict()
        for item in TRUNK:
            if not isinstance(item, str):
                name, cin, cout, dilation = item
                self.convs[name] = torch.nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        for name, (cin, cout, k, rate) in self.head_layers().items():
            self.convs[name] = torch.nn.Conv2d(cin, cout, k, padding=rate if k == 3 else 0,
                                               dilation=rate)
        # Batch normalisation after every convolution but fc8 makes this plain (VGG-like) net
        # train in a few thousand steps; at export it is folded into the convolution before it,
        # so the deployed graph is plain Caffe (Convolution, ReLU, Pooling, Eltwise, Interp).
        self.norms = torch.nn.ModuleDict({name: torch.nn.BatchNorm2d(conv.out_channels)
                                          for name, conv in self.convs.items() if not name.startswith("fc8")})
        for name, conv in self.convs.items():
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
            if name.startswith("fc8"):
                torch.nn.init.normal_(conv.weight, std=0.01)

    def branches(self):
        """Head branch suffixes: ``[""]`` for LargeFOV, ``["_1", ...]`` for ASPP."""
        return [""] if len(self.rates) == 1 else [f"_{k + 1}" for k in range(len(self.rates))]

    def head_layers(self):
        """``{name: (in, out, kernel, rate)}`` of the head's convolutions."""
        layers = {}
        for suffix, rate in zip(self.branches(), self.rates):
            layers[f"fc6{suffix}"] = (TRUNK[-1][2], WIDTH, 3, rate)
            layers[f"fc7{suffix}"] = (WIDTH, WIDTH, 1, 1)
            layers[f"fc8_shapes{suffix}"] = (WIDTH, NUM_CLASSES, 1, 1)
        return layers

    def conv_relu(self, name, x):
        return F.relu(self.norms[name](self.convs[name](x)))

    def folded_weights(self):
        """Caffe blobs by layer name, batch normalisation (eval mode) folded into the convolutions.

        BN(conv(x)) = s (w * x + b - mean) + beta with s = gamma / sqrt(var + eps), which is the
        convolution with weights ``s w`` and bias ``s (b - mean) + beta``.
        """
        weights = {}
        for name, conv in self.convs.items():
            w = conv.weight.detach().double()
            b = conv.bias.detach().double()
            if name in self.norms:
                bn = self.norms[name]
                scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
                w = w * scale[:, None, None, None]
                b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
            weights[name] = [w.numpy().astype(np.float32), b.numpy().astype(np.float32)]
        return weights

    def forward(self, x):
        """``x`` (N, 3, 97, 97) preprocessed -> fc8 scores (N, classes, 13, 13)."""
        for item in TRUNK:
            if isinstance(item, str):
                x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
            else:
                x = self.conv_relu(item[0], x)
        scores = 0
        for suffix in self.branches():
            y = self.conv_relu(f"fc6{suffix}", x)
            y = self.conv_relu(f"fc7{suffix}", y)
            scores = scores + self.convs[f"fc8_shapes{suffix}"](y)
        return scores


def interp_zoom8(scores):
    """Caffe's Interp zoom 8 (align-corners bilinear), (N, L, 13, 13) -> (N, L, 97, 97)."""
    return F.interpolate(scores, size=(SIZE, SIZE), mode="bilinear", align_corners=True)


def preprocess(images):
    """RGB uint8 (N, H, W, 3) -> DeepLab's input: BGR minus the mean, (N, 3, H, W) float32."""
    bgr = images[..., ::-1].astype(np.float32) - np.float32(MEAN_BGR)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- export

def _conv_layer(name, bottom, num_output, kernel, rate):
    """A Caffe Convolution with DeepLab's padding: pad = rate for 3x3, 0 for 1x1."""
    param = {"num_output": num_output, "kernel_size": [kernel], "pad": [rate if kernel == 3 else 0]}
    if rate > 1:
        param["dilation"] = [rate]
    return LayerSpec(name, "Convolution", [bottom], [name], {"convolution_param": param})


def _relu_layer(name):
    """In-place ReLU named as DeepLab names them (conv1_1 -> relu1_1, fc6_2 -> relu6_2)."""
    return LayerSpec("relu" + name.removeprefix("conv").removeprefix("fc"), "ReLU", [name], [name])


def net_spec(model, name):
    """The deploy NetSpec of ``model`` and its (folded) weights by layer name."""
    layers, top = [], "data"
    for item in TRUNK:
        if isinstance(item, str):
            layers.append(LayerSpec(item, "Pooling", [top], [item],
                                    {"pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2,
                                                       "pad": 1}}))
            top = item
        else:
            layers += [_conv_layer(item[0], top, item[2], 3, item[3]), _relu_layer(item[0])]
            top = item[0]
    trunk_top, sums = top, []
    for suffix in model.branches():
        for n in (f"fc6{suffix}", f"fc7{suffix}", f"fc8_shapes{suffix}"):
            _, cout, k, rate = model.head_layers()[n]
            layers.append(_conv_layer(n, trunk_top if n.startswith("fc6") else top, cout, k, rate))
            if not n.startswith("fc8"):
                layers.append(_relu_layer(n))
            top = n
        sums.append(top)
    if len(sums) > 1:
        layers.append(LayerSpec("fc8_shapes", "Eltwise", sums, ["fc8_shapes"],
                                {"eltwise_param": {"operation": "SUM"}}))
    layers.append(LayerSpec("fc8_interp", "Interp", ["fc8_shapes"], ["fc8_interp"],
                            {"interp_param": {"zoom_factor": 8}}))
    return NetSpec(name, layers, ["data"], [(1, 3, SIZE, SIZE)]), model.folded_weights()


def export(model, name, out):
    """Write ``<name>.prototxt`` and ``<name>.caffemodel``; return their paths."""
    spec, weights = net_spec(model, name)
    prototxt, caffemodel = out / f"{name}.prototxt", out / f"{name}.caffemodel"
    with atomic_write(prototxt, "w") as f:
        f.write(format_prototxt(spec, dialect="new"))
    write_caffemodel(caffemodel, spec, weights, dialect="new")
    read_back = read_caffemodel(caffemodel)
    for n, blobs in weights.items():
        for a, b in zip(blobs, read_back.layer(n).blobs):
            if not np.array_equal(a, b):
                raise AssertionError(f"{caffemodel}: layer {n} does not read back equal")
    return prototxt, caffemodel


def verify_export(model, prototxt, caffemodel, images):
    """Max |OpenCV - torch| / max|torch| (and the same for nets.Net if present) on ``images``."""
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    x = preprocess(images)
    with torch.no_grad():
        want = interp_zoom8(model(x)).numpy()
    errors = {"opencv": 0.0}
    for n in range(len(images)):
        net.setInput(x[n:n + 1].numpy())
        got = net.forward("fc8_interp")
        errors["opencv"] = max(errors["opencv"], float(np.abs(got - want[n:n + 1]).max()
                                                       / np.abs(want[n]).max()))
    try:
        from nets import Net
    except ImportError:
        return errors
    graph = Net.load(caffemodel, prototxt=prototxt)
    errors["nets.Net"] = 0.0
    for n in range(len(images)):
        got = np.asarray(graph.forward(x[n:n + 1].numpy())["fc8_interp"])
        errors["nets.Net"] = max(errors["nets.Net"], float(np.abs(got - want[n:n + 1]).max()
                                                           / np.abs(want[n]).max()))
    return errors


# ----------------------------------------------------------------------------- training

def confusion(labels, predictions):
    """Confusion matrix (true, predicted) over all pixels of label maps (..., H, W), (classes, classes) int64."""
    # A batch (N, H, W) is counted as one tall (N*H, W) map.
    return confusion_matrix(labels.reshape(-1, labels.shape[-1]), predictions.reshape(-1, predictions.shape[-1]),
                            NUM_CLASSES, ignore=None)


def predict_scores(model, images, batch=50):
    """Upsampled scores (N, classes, 97, 97) float32."""
    outs = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            outs.append(interp_zoom8(model(preprocess(images[s:s + batch]))).numpy())
    return np.concatenate(outs)


def evaluate(model, images, labels):
    model.eval()
    return mean_iou(confusion(labels, predict_scores(model, images).argmax(1)))


def dihedral(images, labels, rng):
    """One random flip/transpose per sample (the classes are invariant to all eight)."""
    images, labels = images.copy(), labels.copy()
    for n in range(len(images)):
        k = rng.integers(8)
        im, lb = images[n], labels[n]
        if k & 1:
            im, lb = im[:, ::-1], lb[:, ::-1]
        if k & 2:
            im, lb = im[::-1], lb[::-1]
        if k & 4:
            im, lb = im.transpose(1, 0, 2), lb.T
        images[n], labels[n] = im, lb
    return images, labels


def train(name, rates, data, args, log):
    """Train one net with Adam and a cosine schedule; stop when validation mIoU plateaus."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = DemoNet(rates)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_images, train_labels, val_images, val_labels = data
    history, best, since_best, step, start = [], -1.0, 0, 0, time.time()
    losses = []
    while step < args.steps:
        order = rng.permutation(len(train_images))
        for s in range(0, len(order) - args.batch + 1, args.batch):
            images, labels = dihedral(train_images[order[s:s + args.batch]],
                                      train_labels[order[s:s + args.batch]], rng)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            model.train()
            loss = F.cross_entropy(interp_zoom8(model(preprocess(images))),
                                   torch.from_numpy(labels.astype(np.int64)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                miou = evaluate(model, val_images, val_labels)
                record = {"step": step, "loss": float(np.mean(losses[-args.eval_every:])),
                          "val_miou": miou, "seconds": time.time() - start}
                history.append(record)
                log(f"{name}: step {step} loss {record['loss']:.4f} val mIoU {miou:.4f} "
                    f"({record['seconds']:.0f} s)")
                if miou > best + args.min_delta:
                    best, since_best = miou, 0
                else:
                    since_best += 1
                if since_best >= args.patience:
                    log(f"{name}: validation mIoU has not risen by {args.min_delta} for "
                        f"{args.patience} evaluations; stopping")
                    return model, history, time.time() - start
            if step >= args.steps:
                break
    return model, history, time.time() - start


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("nets/data/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, default=4000, help="training split indices 0..N-1")
    p.add_argument("--val-samples", type=int, default=100,
                   help="validation for early stopping: training split indices 1000000..")
    p.add_argument("--heldout-samples", type=int, default=100, help="held-out split indices 0..N-1")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--min-delta", type=float, default=0.003)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nets", default="largefov,aspp")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)

    wall = time.time()
    sizes = check_geometry()
    log(f"sizes through the trunk: {' -> '.join(map(str, sizes))}; Interp zoom 8 -> {SIZE}")
    t = time.time()
    train_data = shapes_dataset.dataset(range(args.train_samples), "train")
    val_data = shapes_dataset.dataset(range(1_000_000, 1_000_000 + args.val_samples), "train")
    heldout_images, heldout_labels = shapes_dataset.dataset(range(args.heldout_samples), "heldout")
    log(f"generated {args.train_samples} training, {args.val_samples} validation and "
        f"{args.heldout_samples} held-out samples in {time.time() - t:.1f} s")

    results = {}
    for name in args.nets.split(","):
        rates = {"largefov": (LARGEFOV_RATE,), "aspp": ASPP_RATES}[name]
        model, history, seconds = train(name, rates, train_data + val_data, args, log)
        model.eval()
        scores = predict_scores(model, heldout_images)
        matrix = confusion(heldout_labels, scores.argmax(1))
        tp = np.diag(matrix)
        per_class = (tp / (matrix.sum(0) + matrix.sum(1) - tp)).tolist()
        prototxt, caffemodel = export(model, f"shapes_{name}", args.out)
        errors = verify_export(model, prototxt, caffemodel, heldout_images[:4])
        for oracle, error in errors.items():
            log(f"{name}: export check against {oracle}: max |diff| / max |score| = {error:.2e}")
            if error > 1e-4:
                raise AssertionError(f"{name}: {oracle} differs from torch by {error:.2e} x max|score|")
        results[name] = {"rates": list(rates), "seconds": seconds, "history": history,
                         "heldout_miou": mean_iou(matrix), "per_class_iou": per_class,
                         "export_errors": errors, "prototxt": prototxt.name, "caffemodel": caffemodel.name,
                         "caffemodel_bytes": caffemodel.stat().st_size,
                         "parameters": sum(p.numel() for p in model.parameters())}
        log(f"{name}: held-out mIoU {results[name]['heldout_miou']:.4f} after {history[-1]['step']} steps, "
            f"{seconds:.0f} s")

    heldout_dir = args.out / "heldout"
    heldout_dir.mkdir(exist_ok=True)
    for n in range(SHIPPED_HELDOUT):
        save_image_atomic(Image.fromarray(heldout_images[n], "RGB"), heldout_dir / f"image_{n:02d}.png")
        write_label_png(heldout_dir / f"label_{n:02d}.png", heldout_labels[n])
    manifest = {
        "classes": list(shapes_dataset.CLASSES), "input_size": SIZE, "mean_bgr": list(MEAN_BGR),
        "input": "BGR, minus mean_bgr, no scaling, (1, 3, 97, 97); no padding",
        "heldout": {"split": "heldout", "indices": list(range(SHIPPED_HELDOUT)), "folder": "heldout"},
        "models": {n: {k: r[k] for k in ("prototxt", "caffemodel", "rates", "heldout_miou")}
                   for n, r in results.items()},
    }
    with atomic_write(args.out / "demo.json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    with atomic_write(args.out / "training_log.json", "w") as f:
        json.dump({"argv": argv, "results": results, "wall_seconds": time.time() - wall}, f, indent=1)
        f.write("\n")
    log(f"total wall time {time.time() - wall:.0f} s; command: python tools/train_demo.py "
        f"{shlex.join(argv)}; torch {torch.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}")


if __name__ == "__main__":
    main()
