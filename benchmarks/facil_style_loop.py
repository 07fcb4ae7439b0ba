"""A FACIL-style training loop: the yardstick ``python -m cil.bench`` is measured against.

It trains the way FACIL's ``main_incremental.py`` does for CIFAR-100, so a side-by-side timing says
what cil's on-device data path gains: a task's images stay uint8 HWC arrays on the host; a
``DataLoader`` with worker processes turns each sample into a PIL image and runs FACIL's per-sample
transform (training: ``Pad(4)``, ``RandomResizedCrop(32)``, ``RandomHorizontalFlip``, ``ToTensor``,
``Normalize``; ``--augment crop`` swaps the resized crop for a plain ``RandomCrop(32)``); the model is
ResNet-32 (cil's module, run as FACIL would: fp32, contiguous memory, no BatchNorm folding) with one
linear head per task; SGD over the backbone and the current head (FACIL's LwF without exemplars),
gradient-norm clipping at 10,000; and for LwF the frozen old model's forward runs outside ``no_grad``,
as in FACIL; cuDNN deterministic without autotuning and no TF32 (FACIL's defaults, and cil's). It times
epochs of task 0 (finetuning) and of task 1 (LwF: CE on the current head + joint KD over the old heads,
T = 2) in the window ``python -m cil.bench`` times (cil.bench.Window: per epoch the first
``--warmup-batches`` batches untimed, which includes the DataLoader's workers starting; the median over
``--epochs`` epochs) and prints one JSON line of images per second.

Usage: ``python -m benchmarks.facil_style_loop CIFAR_ROOT [--batch 64] [--workers 2] [--tasks 10] [--device auto]``
(CIFAR_ROOT holds ``cifar-100-python/``: the real set, or one written by ``benchmarks.fake_cifar100``).
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.nn import functional as F

from cil.bench import Window, add_window_arguments, synchronize
from cil.catalog import CIFAR100_STATS
from cil.losses import kd_joint
from cil.networks import make_backbone


class TaskImages(torch.utils.data.Dataset):
    """FACIL's memory dataset: one PIL image per sample, transformed on every access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class MultiHeadNet(nn.Module):
    """FACIL's ``LLL_Net``: a backbone and a list of linear heads; forward returns every head's logits."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.dim = make_backbone("resnet32", 3, 32)
        self.heads = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(x)
        return [head(features) for head in self.heads]


def train_transform(augment: str) -> T.Compose:
    crop = T.RandomResizedCrop(32) if augment == "facil" else T.RandomCrop(32)
    return T.Compose([T.Pad(4), crop, T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(*CIFAR100_STATS)])


def read_cifar_train(root: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    images = np.asarray(raw["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(raw["fine_labels"], dtype=np.int64)


def time_epoch(net: MultiHeadNet, old: MultiHeadNet | None, loader: torch.utils.data.DataLoader,
               t: int, device: torch.device, warmup_batches: int, temperature: float = 2.0) -> tuple[int, float]:
    """(images, seconds) of one FACIL-style training epoch of task t after its first ``warmup_batches``
    (the loader's workers start and the first batches run before the timer starts)."""
    params = [*net.backbone.parameters(), *net.heads[t].parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1)
    net.train()
    seen = 0
    start = None
    for i, (images, targets) in enumerate(loader):
        if i == warmup_batches:
            synchronize(device)
            start = time.perf_counter()
        images, targets = images.to(device), targets.to(device)
        old_outputs = old(images) if old is not None else None     # FACIL: no no_grad around it
        outputs = net(images)
        loss = F.cross_entropy(outputs[t], targets)
        if old_outputs is not None:
            loss = loss + kd_joint(outputs[:t], old_outputs[:t], temperature)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 10000.0)
        optimizer.step()
        if start is not None:
            seen += len(targets)
    if start is None:
        raise ValueError(f"--warmup-batches {warmup_batches} leave no batch of task {t} to time: lower it or "
                         "raise --limit")
    synchronize(device)
    return seen, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.facil_style_loop",
                                description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="data root holding cifar-100-python/")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (FACIL default: 4)")
    p.add_argument("--tasks", type=int, default=10, help="tasks of equal size over the 100 classes")
    p.add_argument("--augment", choices=("facil", "crop"), default="facil",
                   help="facil: Pad(4) + RandomResizedCrop(32) + flip; crop: Pad(4) + RandomCrop(32) + flip")
    add_window_arguments(p)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    window = Window(a.warmup_batches, a.epochs)
    images, labels = read_cifar_train(a.root)
    per_task = 100 // a.tasks
    net = MultiHeadNet().to(device)
    old = None
    result: dict[str, object] = {}
    for t, key in ((0, "finetuning_img_s"), (1, "lwf_img_s")):
        idx = np.flatnonzero((labels >= t * per_task) & (labels < (t + 1) * per_task))
        idx = idx[: int(len(idx) * 0.9)]                             # FACIL holds 10% out for validation
        if a.limit:
            idx = idx[: a.limit]
        loader = torch.utils.data.DataLoader(
            TaskImages(images[idx], labels[idx] - t * per_task, train_transform(a.augment)),
            batch_size=a.batch, shuffle=True, num_workers=a.workers)
        net.heads.append(nn.Linear(net.dim, per_task).to(device))
        timed = [time_epoch(net, old, loader, t, device, window.warmup_batches) for _ in range(window.epochs)]
        result[key] = round(window.rate(timed), 1)
        old = copy.deepcopy(net).eval()
    print(json.dumps(result | {"augment": a.augment, "device": str(device), "batch_size": a.batch,
                               "window": window.describe()}))


if __name__ == "__main__":
    main()
