"""Feature extractors and the multi-head incremental network (FACIL's ``LLL_Net`` semantics).

A backbone maps images ``[N, C, H, W]`` to features ``[N, D]``; :class:`IncrementalNet` puts one linear
head per task on top of it. Backbones are looked up by name (:func:`make_backbone`), so a network is
data in the experiment config (``model.network``): the names, and the class each builds, are rows of the
torch-free catalog :data:`cil.catalog.NETWORKS`; every backbone is built as ``Class(in_channels, image_size)``.

Every backbone exposes a ``last_relu`` attribute (default ``True``): LUCIR removes the ReLU after
the last block so features can be negative (FACIL swaps in a ``BasicBlockNoRelu``; here it is a
flag, see :meth:`IncrementalNet.set_last_relu`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from cil.catalog import NETWORK_NAMES, NETWORKS

__all__ = ["BACKBONES", "ConvNet", "CosineLinear", "IncrementalNet", "ResNet18", "ResNet32", "make_backbone"]


def _kaiming_init(module: nn.Module) -> None:
    """FACIL's ResNet-32 init: Kaiming-normal (fan_out, relu) convolutions, BN at weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0.0)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


# ---------------------------------------------------------------------------------------------------
# ResNet-32 (FACIL's CIFAR network)
# ---------------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; ``final_relu=False`` leaves the sum linear."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        # FACIL's ResNet-32 uses a projection shortcut (1x1 conv + BN, "option B") wherever the shape
        # changes, not the zero-padding "option A" of the original CIFAR ResNet paper.
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.final_relu = True

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out, inplace=True) if self.final_relu else out


class ResNet32(nn.Module):
    """FACIL's ResNet-32 without its classifier: 64-d globally pooled features (about 0.46M params).

    Global pooling is adaptive (FACIL uses a fixed 8x8 average pool, identical at 32x32 input), so
    other input sizes work too.
    """

    out_dim = 64

    def __init__(self, in_channels: int = 3, image_size: int = 32, blocks_per_stage: int = 5) -> None:
        """``image_size`` is part of every backbone's signature (the catalog builds all alike); global
        pooling makes this one independent of it."""
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            blocks = [_BasicBlock(cin, width, stride=1 if i == 0 else 2)]
            blocks += [_BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.layer1, self.layer2, self.layer3 = stages
        _kaiming_init(self)

    @property
    def last_relu(self) -> bool:
        return self.layer3[-1].final_relu

    @last_relu.setter
    def last_relu(self, enabled: bool) -> None:
        self.layer3[-1].final_relu = bool(enabled)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ---------------------------------------------------------------------------------------------------
# ResNet-18 (torchvision)
# ---------------------------------------------------------------------------------------------------


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (random init, ``fc`` removed): 512-d features.

    For small inputs (``image_size < 64``) the 7x7 stride-2 stem and its max-pool would shrink a 32x32
    image to 8x8 before the first block, so the stem becomes a 3x3 stride-1 convolution and the
    max-pool is dropped (the usual CIFAR adaptation). ``in_channels != 3`` replaces the stem conv.
    """

    out_dim = 512

    def __init__(self, in_channels: int = 3, image_size: int = 224) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.fc = nn.Identity()
        small = image_size < 64
        if small:
            net.conv1 = _conv3x3(in_channels, 64)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if small or in_channels != 3:
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.net = net
        self.last_relu = True
        #: the ReLU at the end of layer3's last block; FACIL's LUCIR removes this one on ResNet-18 (its
        #: ``BasicBlockNoRelu`` swap targets ``layer3[-1]``, the last block of its ResNet-32)
        self.layer3_relu = True

    @staticmethod
    def _stage(stage: nn.Sequential, x: Tensor, final_relu: bool) -> Tensor:
        """A torchvision stage, optionally without the ReLU after its last block's residual sum."""
        if final_relu:
            return stage(x)
        for block in list(stage)[:-1]:
            x = block(x)
        last = stage[-1]
        out = last.bn2(last.conv2(last.relu(last.bn1(last.conv1(x)))))
        return out + (x if last.downsample is None else last.downsample(x))

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = self._stage(n.layer3, n.layer2(n.layer1(x)), self.layer3_relu)
        x = self._stage(n.layer4, x, self.last_relu)
        return torch.flatten(n.avgpool(x), 1)


# ---------------------------------------------------------------------------------------------------
# Small CNN for tiny inputs (digits 8x8, MNIST 28x28, synthetic data)
# ---------------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """Two conv(3x3)+BN+ReLU blocks (32, 64 channels), a 4x4 max-pooled grid, then Linear+BN+ReLU: 128-d.

    Built for tiny images such as the 8x8 digits: global average pooling would throw away where the
    strokes are, which is most of what an 8x8 digit has, so the last feature map is max-pooled to a
    fixed 4x4 grid and flattened instead. A 2x2 max-pool follows a block only while the map is larger
    than 8x8, so small inputs keep their resolution and larger ones (28, 32...) stay cheap.
    Trains digits past 95% test accuracy within two epochs (SGD, lr 0.1, batch 64) in under a second on a CPU.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, widths: tuple[int, ...] = (32, 64),
                 grid: int = 4, out_dim: int = 128) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.grid = grid
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        pools, size, cin = [], image_size, in_channels
        for width in widths:
            self.convs.append(_conv3x3(cin, width))
            self.bns.append(nn.BatchNorm2d(width))
            pools.append(size > 8)
            size = size // 2 if size > 8 else size
            cin = width
        self.pools = tuple(pools)
        self.fc = nn.Linear(cin * grid * grid, out_dim, bias=False)
        self.bn_fc = nn.BatchNorm1d(out_dim)
        self.last_relu = True
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        for conv, bn, pool in zip(self.convs, self.bns, self.pools, strict=True):
            x = F.relu(bn(conv(x)), inplace=True)
            if pool:
                x = F.max_pool2d(x, 2)
        x = self.bn_fc(self.fc(torch.flatten(F.adaptive_max_pool2d(x, self.grid), 1)))
        return F.relu(x) if self.last_relu else x


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

#: the backbone names (rows of cil.catalog.NETWORKS); every module built has ``out_dim`` and ``last_relu``
BACKBONES = NETWORK_NAMES


def make_backbone(name: str, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    """Build the feature extractor called ``name``; returns ``(module, feature_dim)``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {', '.join(sorted(NETWORK_NAMES))}")
    if in_channels < 1 or image_size < 1:
        raise ValueError(f"in_channels and image_size must be positive, got {in_channels} and {image_size}")
    module = NETWORKS[name].build()(in_channels, image_size)
    return module, int(module.out_dim)


# ---------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------


class CosineLinear(nn.Module):
    """LUCIR's cosine-normalised head: ``sigma * cos(f, w_c)`` for each class ``c``.

    ``sigma`` is a learnable scale that LUCIR shares between all heads: pass the previous head's
    parameter to share it (the same ``nn.Parameter`` object), or leave it out for a new one at 1.
    :meth:`cosine` gives the unscaled cosines.
    """

    def __init__(self, in_features: int, out_features: int, sigma: nn.Parameter | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.sigma = sigma if sigma is not None else nn.Parameter(torch.ones(1))

    def cosine(self, features: Tensor) -> Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, features: Tensor) -> Tensor:
        return self.sigma * self.cosine(features)


# ---------------------------------------------------------------------------------------------------
# Multi-head network
# ---------------------------------------------------------------------------------------------------


class IncrementalNet(nn.Module):
    """A backbone with one linear head per task; ``forward`` returns the list of per-head logits.

    Global class ``c`` is column ``c`` of ``torch.cat(net(x), dim=1)``: head ``t`` covers classes
    ``task_offsets[t] .. task_offsets[t] + task_cls[t] - 1``.

    Checkpoints: the head list is part of the module structure, so to load a state_dict, re-create
    the net (same backbone name and input shape) and call :meth:`add_head` with the same class counts
    as when it was saved, *then* ``load_state_dict``.
    """

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_dim = int(out_dim)
        self.heads = nn.ModuleList()

    # -- structure ------------------------------------------------------------------------------------

    def add_head(self, n_classes: int, head: nn.Module | None = None) -> None:
        """Append a head for ``n_classes`` classes on the backbone's device and dtype: ``head`` (anything
        with ``out_features == n_classes`` mapping features to logits) or a fresh ``nn.Linear``."""
        if n_classes < 1:
            raise ValueError(f"a head needs at least one class, got {n_classes}")
        if head is None:
            head = nn.Linear(self.out_dim, int(n_classes))
        elif getattr(head, "out_features", None) != n_classes:
            raise ValueError(f"head {type(head).__name__} has out_features "
                             f"{getattr(head, 'out_features', None)!r}, expected {n_classes}")
        ref = next(self.backbone.parameters(), None)
        if ref is not None:
            head = head.to(device=ref.device, dtype=ref.dtype)
        self.heads.append(head)

    @property
    def task_cls(self) -> list[int]:
        """Classes per head, read from the heads themselves (approaches may replace a head)."""
        return [int(h.out_features) for h in self.heads]

    @property
    def task_offsets(self) -> list[int]:
        """Global index of each head's first class."""
        offsets, total = [], 0
        for n in self.task_cls:
            offsets.append(total)
            total += n
        return offsets

    @property
    def num_classes(self) -> int:
        return sum(self.task_cls)

    def set_last_relu(self, enabled: bool) -> None:
        """Keep or remove the ReLU after the backbone's last block (LUCIR removes it)."""
        if not hasattr(self.backbone, "last_relu"):
            raise AttributeError(f"{type(self.backbone).__name__} has no last_relu switch")
        self.backbone.last_relu = bool(enabled)

    # -- forward --------------------------------------------------------------------------------------

    def features(self, x: Tensor) -> Tensor:
        """Backbone features ``[N, out_dim]``, fp32 under ``train.amp``'s autocast too."""
        return self.backbone(x).float()

    def forward(self, x: Tensor, return_features: bool = False) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        """Per-head logits (and the features when ``return_features``)."""
        if len(self.heads) == 0:
            raise RuntimeError("IncrementalNet has no heads yet: call add_head() before forward()")
        feats = self.features(x)
        with full_precision(feats.device.type):  # train.amp: the heads in fp32
            logits = [head(feats) for head in self.heads]
        return (logits, feats) if return_features else logits

    # -- freezing -------------------------------------------------------------------------------------

    def freeze_backbone(self) -> None:
        """Stop gradients into the backbone (heads stay trainable): FACIL's freezing approach."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def freeze_bn(self) -> None:
        """Put the backbone's BatchNorm layers in eval mode; call again after every ``train()``."""
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    # -- diagnostics ----------------------------------------------------------------------------------

    @torch.no_grad()
    def head_stats(self) -> list[tuple[float, float]]:
        """Per head: (L2 norm of its weight matrix, mean of its bias), the paper's imbalance diagnostic.

        A head without a bias (e.g. a cosine classifier) reports a bias mean of 0.0.
        """
        stats = []
        for head in self.heads:
            norm = float(head.weight.detach().float().norm())
            bias = getattr(head, "bias", None)
            stats.append((norm, float(bias.detach().float().mean()) if bias is not None else 0.0))
        return stats


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Autocast off for a region, where it is on: ``train.amp`` runs the backbone in bf16 and the heads,
    the losses and the scores in fp32 (rounding logits or cosines to bf16 changes the results)."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    with torch.autocast(device_type, enabled=False):
        yield

