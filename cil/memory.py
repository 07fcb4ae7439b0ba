"""FACIL's exemplar memory: a budget of stored training images (uint8) re-selected after every task.

Budgets (FACIL's ``--num-exemplars`` / ``--num-exemplars-per-class``):

- total ``num_exemplars``: each seen class keeps ``ceil(num_exemplars / classes_seen)`` samples.
  FACIL rounds *up* (``ExemplarsSelector._exemplars_per_class_num``), so the memory can exceed the
  budget by less than one sample per class (2000 exemplars over 30 classes keep 67 each = 2010); this
  is kept for comparability with FACIL's numbers.
- per-class ``num_exemplars_per_class``: the memory grows with the classes.

Selection (FACIL's ``src/datasets/exemplars_selection.py``):

- ``random``: a uniform subset per class, drawn from the caller's ``torch.Generator``.
- ``herding``: iCaRL's greedy choice; features are L2-normalised, and step k takes the sample that
  brings the mean of the chosen ones closest to the class mean.
- ``entropy``: highest entropy of the softmax over the concatenated logits of all heads.
- ``distance``: lowest logit of the sample's own class in the concatenated logits (closest to the
  decision boundary). Global label ``c`` is column ``c`` of the concatenated logits.

As in FACIL, every update re-selects for *all* classes from the candidates at hand: the new task's
images plus the stored exemplars of the old classes, scored by the current model. With a total budget
this is how old classes shrink to the new quota (herding re-herds the stored exemplars with the new
features rather than keeping a prefix of the old order).

Deviations from FACIL, all in corner cases: a class with fewer samples than its quota keeps all of them
(FACIL asserts); entropy uses ``log_softmax`` (FACIL's ``log(softmax)`` gives NaN when a probability
underflows to 0); a zero feature vector is normalised with a small epsilon instead of dividing by 0;
ties are broken by the lower index (stable sorts), which makes the selection deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cil.config import SELECTIONS  # the one list of exemplar selections, validated by the config

__all__ = ["SELECTIONS", "ExemplarMemory", "distance_order", "entropy_order", "herding_order"]



# ---------------------------------------------------------------------------------------------------
# Per-class orderings: the first m indices of an ordering are the m exemplars of that class.
# ---------------------------------------------------------------------------------------------------


def herding_order(features: Tensor, m: int) -> Tensor:
    """iCaRL herding on one class's features ``[n, D]``: indices of the first ``min(m, n)`` picks, in order.

    Pick k minimises ``|| mu - (sum of the k already chosen + f) / (k + 1) ||`` over unchosen ``f``,
    where ``mu`` is the mean of the normalised features of the class. Runs in float64 on the CPU.
    """
    f = F.normalize(features.detach().to("cpu", torch.float64), dim=1)
    n = f.shape[0]
    m = min(int(m), n)
    mu = f.mean(0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool)
    order = torch.empty(m, dtype=torch.long)
    for k in range(m):
        dist = (mu - (running + f) / (k + 1)).norm(dim=1)
        dist[taken] = math.inf
        i = int(torch.argmin(dist))  # first minimum on ties, like FACIL's strict '<' scan
        order[k] = i
        taken[i] = True
        running += f[i]
    return order


def entropy_order(logits: Tensor) -> Tensor:
    """Indices sorted by decreasing entropy of ``softmax(logits)`` (ties: lower index first)."""
    logp = F.log_softmax(logits.detach().double(), dim=1)
    neg_entropy = (logp.exp() * logp).sum(1)
    return torch.sort(neg_entropy, stable=True).indices


def distance_order(logits: Tensor, cls: int) -> Tensor:
    """Indices sorted by increasing logit of class ``cls`` (closest to the boundary first)."""
    return torch.sort(logits.detach()[:, cls].double(), stable=True).indices


# ---------------------------------------------------------------------------------------------------
# The memory
# ---------------------------------------------------------------------------------------------------


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


class ExemplarMemory:
    """Stored exemplars ``x`` (uint8 ``[M, C, H, W]``) and their global labels ``y`` (int64 ``[M]``).

    The exemplars live on the device of the images last passed to :meth:`update` (move them with
    :meth:`to`); they are grouped by class in increasing label order, each class in selection order.
    """

    def __init__(self, num_exemplars: int = 0, num_exemplars_per_class: int = 0,
                 selection: str = "random") -> None:
        self.num_exemplars = _check_count("num_exemplars", num_exemplars)
        self.num_exemplars_per_class = _check_count("num_exemplars_per_class", num_exemplars_per_class)
        if self.num_exemplars > 0 and self.num_exemplars_per_class > 0:
            raise ValueError(
                f"num_exemplars={num_exemplars} and num_exemplars_per_class={num_exemplars_per_class}: "
                "set only one of them (a total budget or a per-class budget), the other must be 0"
            )
        if selection not in SELECTIONS:
            raise ValueError(f"unknown exemplar selection {selection!r}; valid: {', '.join(SELECTIONS)}")
        self.selection = selection
        self.x: Tensor = torch.empty(0, dtype=torch.uint8)
        self.y: Tensor = torch.empty(0, dtype=torch.long)

    # -- inspection -----------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False when both budgets are 0: no memory at all."""
        return self.num_exemplars > 0 or self.num_exemplars_per_class > 0

    @property
    def size(self) -> int:
        """Number of stored exemplars."""
        return int(self.y.numel())

    def __len__(self) -> int:
        return self.size

    def class_counts(self) -> dict[int, int]:
        """Stored exemplars per global class label."""
        labels, counts = torch.unique(self.y.cpu(), return_counts=True)
        return {int(c): int(n) for c, n in zip(labels, counts, strict=True)}

    def per_class_quota(self, num_classes: int) -> int:
        """Exemplars kept per class once ``num_classes`` classes have been seen (0 when disabled)."""
        if self.num_exemplars_per_class > 0:
            return self.num_exemplars_per_class
        if self.num_exemplars > 0 and num_classes > 0:
            return math.ceil(self.num_exemplars / num_classes)  # FACIL rounds up
        return 0

    def to(self, device: torch.device | str) -> ExemplarMemory:
        """Move the stored exemplars to ``device`` (in place); returns self."""
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    # -- selection ------------------------------------------------------------------------------------

    def update(self, model: nn.Module, x: Tensor, y: Tensor, *, transform: Callable[[Tensor], Tensor],
               device: torch.device, generator: torch.Generator, batch_size: int = 256,
               quota: int | None = None) -> None:
        """Re-select the memory after training a task.

        ``x``/``y``: that task's training images (uint8 ``[N, C, H, W]``) and global labels, *without*
        the stored exemplars (the memory adds its own). ``transform`` maps a uint8 batch already on
        ``device`` to the model's normalised float input. ``model`` is an
        :class:`~cil.networks.IncrementalNet` (or anything with its ``forward(x, return_features=False)``);
        it is run in eval mode under ``torch.inference_mode`` and every module's training flag is
        restored afterwards. Only ``random`` draws from ``generator``. ``quota`` replaces the per-class
        number the budget gives (BiC keeps part of its budget apart, as a held-out set).
        """
        if not self.enabled:
            return
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be a uint8 [N, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
        if y.dim() != 1 or y.numel() != x.shape[0]:
            raise ValueError(f"y must be 1-d, one label per image: {tuple(y.shape)} for {x.shape[0]} images")
        if self.size > 0 and self.x.shape[1:] != x.shape[1:]:
            raise ValueError(f"image shape {tuple(x.shape[1:])} != stored {tuple(self.x.shape[1:])}")

        # Candidates: stored exemplars first, then the new images (indexed as one virtual tensor).
        mem_x = self.x.to(x.device) if self.size > 0 else x[:0]
        n_mem = mem_x.shape[0]
        labels = torch.cat([self.y.cpu(), y.detach().cpu().long()])
        classes = torch.unique(labels)  # sorted
        if quota is None:
            quota = self.per_class_quota(len(classes))
        elif isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
            raise ValueError(f"quota must be an integer >= 0 or None, got {quota!r}")

        scores = None
        if self.selection != "random":
            scores = self._score(model, [mem_x, x], transform, device, batch_size)

        chosen = []
        for c in classes.tolist():
            idx = torch.nonzero(labels == c).flatten()
            if self.selection == "random":
                order = torch.randperm(idx.numel(), generator=generator, device=generator.device).cpu()
            elif self.selection == "herding":
                order = herding_order(scores[idx], quota)
            elif self.selection == "entropy":
                order = entropy_order(scores[idx])
            else:
                order = distance_order(scores[idx], c)
            chosen.append(idx[order[:quota]])
        sel = torch.cat(chosen)

        # Gather the chosen images from whichever source holds them.
        from_mem = sel < n_mem
        out = torch.empty((sel.numel(), *x.shape[1:]), dtype=torch.uint8, device=x.device)
        mask = from_mem.to(x.device)
        if n_mem > 0:
            out[mask] = mem_x[sel[from_mem].to(x.device)]
        out[~mask] = x[(sel[~from_mem] - n_mem).to(x.device)]
        self.x = out
        self.y = labels[sel].to(x.device)

    def _score(self, model: nn.Module, sources: list[Tensor], transform: Callable[[Tensor], Tensor],
               device: torch.device, batch_size: int) -> Tensor:
        """Features (herding) or concatenated logits (entropy, distance) of every candidate, on the CPU."""
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        outs = []
        try:
            with torch.inference_mode():
                for src in sources:
                    for start in range(0, src.shape[0], batch_size):
                        batch = transform(src[start:start + batch_size].to(device, non_blocking=True))
                        if self.selection == "herding":
                            outs.append(model(batch, return_features=True)[1].float())
                        else:
                            outs.append(torch.cat(model(batch), dim=1).float())
        finally:
            for m, mode in modes:
                m.training = mode
        return torch.cat(outs).cpu()

    # -- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, ints and strings (safe for ``torch.load(weights_only=True)``), on the CPU."""
        return {
            "num_exemplars": self.num_exemplars,
            "num_exemplars_per_class": self.num_exemplars_per_class,
            "selection": self.selection,
            "x": self.x.detach().cpu().clone(),
            "y": self.y.detach().cpu().clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore the stored exemplars (on the CPU); the budgets and selection must match this memory's."""
        for key in ("num_exemplars", "num_exemplars_per_class", "selection"):
            if d[key] != getattr(self, key):
                raise ValueError(f"memory state has {key}={d[key]!r}, this memory has {getattr(self, key)!r}")
        x, y = d["x"], d["y"]
        if x.dtype != torch.uint8 or y.dtype != torch.long or x.shape[0] != y.shape[0]:
            raise ValueError(f"bad memory state: x {x.dtype} {tuple(x.shape)}, y {y.dtype} {tuple(y.shape)}")
        self.x, self.y = x.clone(), y.clone()
