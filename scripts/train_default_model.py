#!/usr/bin/env python
"""Train guard's default model: FashionResNet on Fashion-MNIST, CPU only.

Trains on all 60,000 training images (nothing held out), evaluates on the 10,000 test images
after each epoch, and writes to ``--out-dir`` (default ``guard/assets``):

* ``fmnist_resnet.pt``   - the state dict (``torch.save(model.state_dict())``)
* ``fmnist_resnet.onnx`` - input ``"input"`` float32 [batch, 1, 28, 28] in [0, 1],
                           output ``"logits"`` float32 [batch, 10]
* ``fmnist_resnet.json`` - architecture, test accuracy (torch and onnxruntime), epochs, seed,
                           training time, versions, and the command used

Augmentation (random crop with 2-pixel zero padding, horizontal flip) is done with torch tensor
ops; torchvision is not needed. Run from the repository root:

    .venv/bin/python scripts/train_default_model.py --epochs 15

``--classes`` trains on a subset of the classes (labels remapped to ``0..k-1`` in the given order,
train and test restricted to them) and ``--name`` sets the output file stem. The near-OOD model,
whose held-out classes 8 (Bag) and 9 (Ankle boot) serve as near out-of-distribution data:

    .venv/bin/python scripts/train_default_model.py --epochs 15 \
        --classes 0,1,2,3,4,5,6,7 --name fmnist_resnet_8cls

``--dataset mnist`` / ``--dataset notmnist`` trains on 8,000 of the 10,000 images of the shared
MNIST / notMNIST test file (``guard.datasets.split_8k``, seed 0) and tests on the other 2,000,
with random crops only (a flipped digit or letter is another glyph); the OOD suite's models:

    .venv/bin/python scripts/train_default_model.py --dataset mnist --epochs 6 \
        --name mnist_resnet --threads 1
    .venv/bin/python scripts/train_default_model.py --dataset notmnist --epochs 6 \
        --name notmnist_resnet --threads 1

With the defaults (all 10 classes, name ``fmnist_resnet``) nothing differs from the original
recipe: the data, the random number stream and the outputs are the same.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from guard.datasets import (
    NOTMNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
    load_mnist,
    load_notmnist,
    split_8k,
)
from guard.model.export import export_torch_to_onnx
from guard.model.nets import FashionResNet, ResNet20, to_rgb32

MODEL_NAME = "fmnist_resnet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    p.add_argument("--out-dir", type=Path, default=Path("guard/assets"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of OneCycle")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--classes",
        type=parse_classes,
        default=None,
        help="comma-separated Fashion-MNIST classes to train on, e.g. 0,1,2,3,4,5,6,7; labels are "
        "remapped to 0..k-1 in this order (default: all 10)",
    )
    p.add_argument(
        "--arch",
        choices=("fashion_resnet", "resnet20_rgb"),
        default="fashion_resnet",
        help="fashion_resnet: [B,1,28,28] (the default model); resnet20_rgb: CIFAR-style ResNet-20 "
        "on [B,3,32,32] (images padded to 32x32, grey channel repeated)",
    )
    p.add_argument("--name", default=MODEL_NAME, help=f"output file stem (default {MODEL_NAME})")
    p.add_argument(
        "--dataset",
        choices=("fashion-mnist", "mnist", "notmnist"),
        default="fashion-mnist",
        help="fashion-mnist: the 60,000 / 10,000 Debian split (default); mnist, notmnist: 8,000 "
        "of the shared 10,000-image file for training, the other 2,000 for testing "
        "(guard.datasets.split_8k, seed 0), random crops without flips",
    )
    p.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="stop each epoch after this many batches (0 = all; for timing)",
    )
    return p.parse_args(argv)


def parse_classes(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct Fashion-MNIST classes, at least two."""
    try:
        classes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if (
        len(classes) < 2
        or len(set(classes)) != len(classes)
        or not all(0 <= c <= 9 for c in classes)
    ):
        raise argparse.ArgumentTypeError(
            f"expected at least two distinct classes in 0..9, got {text!r}"
        )
    return classes


def select_classes(
    x: np.ndarray, y: np.ndarray, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images of ``classes`` (original order) and remap their labels to ``0..k-1``."""
    keep = np.isin(y, classes)
    remap = np.full(10, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return x[keep], remap[y[keep]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and (``flip``) random horizontal flip of
    ``[B, C, H, W]``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    iy = oy[:, None] + torch.arange(h)[None, :]  # [B, H]
    ix = ox[:, None] + torch.arange(w)[None, :]  # [B, W]
    bi = torch.arange(b)[:, None, None]
    crops = padded[bi, :, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)  # [B, C, H, W]
    if not flip:
        return crops
    flips = torch.rand(b, generator=gen) < 0.5
    return torch.where(flips[:, None, None, None], crops.flip(-1), crops)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds = [
        sess.run(["logits"], {"input": x[i : i + batch]})[0].argmax(1)
        for i in range(0, len(x), batch)
    ]
    return float((np.concatenate(preds) == y).mean())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    shared = args.dataset != "fashion-mnist"
    if shared:  # the suite's MNIST / notMNIST models: 8,000 / 2,000 of one 10,000-image file
        all_x, all_y = load_mnist() if args.dataset == "mnist" else load_notmnist()
        tr, te = split_8k(len(all_x))
        train_x_np, train_y_np, test_x_np, test_y_np = all_x[tr], all_y[tr], all_x[te], all_y[te]
    else:
        train_x_np, train_y_np = load_fashion_mnist("train")
        test_x_np, test_y_np = load_fashion_mnist("test")
    subset = args.classes is not None and args.classes != list(range(10))
    n_classes = len(args.classes) if subset else 10
    if subset:  # the default run skips this, so its data and random stream are unchanged
        train_x_np, train_y_np = select_classes(train_x_np, train_y_np, args.classes)
        test_x_np, test_y_np = select_classes(test_x_np, test_y_np, args.classes)
    rgb = args.arch == "resnet20_rgb"
    train_x = torch.from_numpy(as_model_input(train_x_np))
    train_y = torch.from_numpy(train_y_np)
    test_x = torch.from_numpy(as_model_input(test_x_np))
    if rgb:
        train_x, test_x = to_rgb32(train_x).contiguous(), to_rgb32(test_x).contiguous()
    test_x_f = test_x.numpy()
    test_y = torch.from_numpy(test_y_np)
    n = len(train_x)
    steps_per_epoch = (n + args.batch_size - 1) // args.batch_size
    if args.max_batches:
        steps_per_epoch = min(steps_per_epoch, args.max_batches)

    model: FashionResNet | ResNet20
    model = ResNet20(n_classes) if rgb else FashionResNet()
    if n_classes != model.num_classes:
        model.fc = torch.nn.Linear(model.num_features, n_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{type(model).__name__}: {n_params} parameters, {n_classes} classes, {n} training images; "
        f"{args.epochs} epochs x {steps_per_epoch} steps",
        flush=True,
    )

    t0 = time.perf_counter()
    test_acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        t_epoch = time.perf_counter()
        total_loss = 0.0
        correct = 0
        seen = 0
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch}/{args.epochs}", leave=False, mininterval=5
        )
        for step in bar:
            idx = perm[step * args.batch_size : (step + 1) * args.batch_size]
            xb = augment(train_x[idx], gen, flip=not shared)
            yb = train_y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        test_acc = evaluate(model, test_x, test_y)
        print(
            f"epoch {epoch:2d}/{args.epochs}: train loss {total_loss / seen:.4f} "
            f"train acc {correct / seen:.4f} test acc {test_acc:.4f} "
            f"({time.perf_counter() - t_epoch:.0f} s, total {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    train_time = time.perf_counter() - t0

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    pt_path = out_dir / f"{args.name}.pt"
    onnx_path = out_dir / f"{args.name}.onnx"
    json_path = out_dir / f"{args.name}.json"

    model.eval()
    torch.save(model.state_dict(), pt_path)
    export_torch_to_onnx(
        model, test_x[:64].clone(), onnx_path, input_name="input", output_name="logits"
    )
    onnx_size = onnx_path.stat().st_size
    if onnx_size >= 2 * 1024 * 1024:
        raise SystemExit(f"ONNX file {onnx_path} is {onnx_size} bytes, expected < 2 MB")
    ort_acc = onnx_accuracy(onnx_path, test_x_f, test_y_np)
    if abs(ort_acc - test_acc) > 1e-9:
        print(
            f"WARNING: onnxruntime test accuracy {ort_acc:.4f} != torch {test_acc:.4f}", flush=True
        )

    meta = {
        "architecture": "ResNet20" if rgb else "FashionResNet",
        "module": "guard.model.nets." + ("ResNet20" if rgb else "FashionResNet"),
        "dataset": args.dataset,
        "input": {
            "name": "input",
            "shape": ["batch", 3, 32, 32] if rgb else ["batch", 1, 28, 28],
            "dtype": "float32",
            "range": [0.0, 1.0],
        },
        "output": {"name": "logits", "shape": ["batch", n_classes]},
        "num_parameters": n_params,
        "test_accuracy": test_acc,
        "test_accuracy_onnxruntime": ort_acc,
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW(lr={args.lr}, weight_decay={args.weight_decay}) + OneCycleLR",
        "augmentation": "random crop (pad 2)" + ("" if shared else " + horizontal flip"),
        "training_time_s": round(train_time, 1),
        "threads": args.threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "onnx_opset": 17,
        "onnx_size_bytes": onnx_size,
        "command": shlex.join(["python", *sys.argv]),
    }
    if subset:
        from guard.datasets import FASHION_MNIST_CLASSES

        meta["classes"] = args.classes
        meta["class_names"] = [FASHION_MNIST_CLASSES[c] for c in args.classes]
        meta["held_out_classes"] = [c for c in range(10) if c not in args.classes]
        meta["test_images"] = int(len(test_x_np))
    if shared:
        meta["split"] = {
            "rule": "guard.datasets.split_8k(10000, 8000, seed=0)",
            "train_images": int(len(train_x_np)),
            "test_images": int(len(test_x_np)),
        }
        meta["class_names"] = (
            [str(d) for d in range(10)] if args.dataset == "mnist" else list(NOTMNIST_CLASSES)
        )
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {pt_path}, {onnx_path} ({onnx_size} bytes), {json_path}")
    print(
        f"final test accuracy: torch {test_acc:.4f}, onnxruntime {ort_acc:.4f}; "
        f"training time {train_time:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
