"""The paper's loss family, as public functions over lists of per-task logit tensors.

``outputs`` and ``old_outputs`` are the old tasks' heads (tasks 0..t-1) of the current and of the frozen
model, same length and shapes. Each function returns a scalar tensor averaged over the batch. The terms,
their weights and the formula are declared once, torch-free, in :mod:`cil.approaches.family`: each
distillation row names its function here (the function's name is the term's name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cil.approaches.family import DISTILLATION_TERMS

# FACIL adds eps / n_classes to the student's probabilities before the log (and renormalises), which
# keeps the loss finite when a probability underflows; we keep that behaviour for comparable numbers.
KD_EPS = 1e-5


def _check_pairs(outputs: Sequence[torch.Tensor], old_outputs: Sequence[torch.Tensor]) -> None:
    if len(outputs) != len(old_outputs):
        raise ValueError(f"outputs has {len(outputs)} heads but old_outputs has {len(old_outputs)}: "
                         "pass the same old tasks' heads of both models")
    if len(outputs) == 0:
        raise ValueError("outputs is empty: distillation needs at least one old task's head")
    for i, (a, b) in enumerate(zip(outputs, old_outputs, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"head {i}: outputs shape {tuple(a.shape)} != old_outputs shape {tuple(b.shape)}")


def kd(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """KD(a, b; T) = -sum_c softmax(b/T)_c log softmax(a/T)_c, batch mean, with FACIL's eps."""
    if T <= 0:
        raise ValueError(f"T = {T!r} is not valid: the temperature must be > 0")
    p_student = F.softmax(student.float() / T, dim=1)
    p_student = p_student + KD_EPS / p_student.size(1)
    p_student = p_student / p_student.sum(dim=1, keepdim=True)
    p_teacher = F.softmax(teacher.float() / T, dim=1)
    return -(p_teacher * p_student.log()).sum(dim=1).mean()


def kd_joint(outputs: Sequence[torch.Tensor], old_outputs: Sequence[torch.Tensor], T: float) -> torch.Tensor:
    """One softmax over all old classes (LwF as in FACIL): blind to a shift shared by every old logit."""
    _check_pairs(outputs, old_outputs)
    return kd(torch.cat(list(outputs), dim=1), torch.cat(list(old_outputs), dim=1), T)


def kd_task(outputs: Sequence[torch.Tensor], old_outputs: Sequence[torch.Tensor], T: float) -> torch.Tensor:
    """One softmax per old task, summed over tasks: the paper's task-wise distillation."""
    _check_pairs(outputs, old_outputs)
    return torch.stack([kd(a, b, T) for a, b in zip(outputs, old_outputs, strict=True)]).sum()


def bce_kd(outputs: Sequence[torch.Tensor], old_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over old tasks of mean BCE(sigmoid(z_i), sigmoid(zo_i)): sensitive to logit shifts."""
    _check_pairs(outputs, old_outputs)
    terms = [F.binary_cross_entropy_with_logits(a.float(), torch.sigmoid(b.float()))
             for a, b in zip(outputs, old_outputs, strict=True)]
    return torch.stack(terms).sum()


def bce_pred(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE(sigmoid(z), one_hot(y)) over one head's logits: a shift-sensitive prediction loss.

    A target outside ``[0, n_classes)`` (a sample of another task, e.g. an exemplar) has an all-zero
    one-hot row: it is a negative for every class of this head.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits batch {logits.size(0)}")
    # A comparison instead of F.one_hot: one_hot checks the label range on the host (a sync per batch on
    # CUDA) and rejects other tasks' labels.
    logits = logits.float()
    classes = torch.arange(logits.size(1), device=logits.device)
    one_hot = (targets.long().unsqueeze(1) == classes).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, one_hot)


def less_forget(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    """LUCIR's less-forget term: mean over the batch of 1 - cos(f, f_old)."""
    return (1.0 - F.cosine_similarity(features.float(), old_features.float(), dim=1)).mean()


def margin_ranking(cosines: torch.Tensor, targets: torch.Tensor, num_old: int, K: int,
                   margin: float) -> torch.Tensor:
    """LUCIR's inter-class separation: for each old-class sample, its own class's cosine should beat
    each of the top-K new-class cosines by ``margin``; mean of ``relu(margin - gt + hard)`` over those
    (sample, negative) pairs, 0 without old-class samples.

    ``cosines`` are the unscaled cosines over all classes, classes ``>= num_old`` the new task's.
    Computed with a mask rather than by selecting rows, so nothing is read back to the host.
    """
    old = (targets < num_old).to(cosines.dtype)
    gt = cosines.gather(1, targets.unsqueeze(1))
    hard = cosines[:, num_old:].topk(K, dim=1).values
    pairs = F.relu(margin - gt + hard) * old.unsqueeze(1)
    return pairs.sum() / (old.sum() * K).clamp(min=1.0)


def family_distillation(outputs: Sequence[torch.Tensor], old_outputs: Sequence[torch.Tensor], weights: Any,
                        own: tuple[str, Callable[[], torch.Tensor]], terms: dict[str, torch.Tensor]
                        ) -> torch.Tensor | float:
    """The family's distillation (:data:`cil.approaches.family.DISTILLATION_TERMS`, in their order) on top
    of an approach's own distillation term ``own`` = (name, thunk) (LwF: joint KD, LUCIR: less-forget),
    over the old heads: ``sum of loss.w_<term> * term``, with ``weights`` the config's ``loss`` section
    (its ``w_*`` and ``T``). Terms with weight 0 are not computed; the computed ones are recorded in
    ``terms``. The caller multiplies the result by its distillation weight (``lamb``)."""
    distill: torch.Tensor | float = 0.0
    for term in DISTILLATION_TERMS:
        w = getattr(weights, term.weight)
        if not w:
            continue
        if term.own:
            name, value = own[0], own[1]()
        else:
            fn, name = _TERM_FUNCTIONS[term.name], term.name
            value = fn(outputs, old_outputs, weights.T) if term.tempered else fn(outputs, old_outputs)
        terms[name] = value
        distill = distill + w * terms[name]
    return distill


#: distillation term -> its function (a row of the table without its function fails here, at import)
_TERM_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {t.name: globals()[t.name] for t in DISTILLATION_TERMS}
