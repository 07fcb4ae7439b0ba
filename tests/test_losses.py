"""The loss family against hand computations, and the invariances that are the paper's point."""

import math

import pytest
import torch

from cil.losses import KD_EPS, bce_kd, bce_pred, kd_joint, kd_task


def _softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _hand_kd(student, teacher, T):
    """-sum p_teacher * log(p_student with FACIL's eps), averaged over rows, in plain Python."""
    total = 0.0
    for a, b in zip(student, teacher, strict=True):
        ps = _softmax(a, T)
        ps = [p + KD_EPS / len(ps) for p in ps]
        s = sum(ps)
        ps = [p / s for p in ps]
        pt = _softmax(b, T)
        total += -sum(t * math.log(p) for t, p in zip(pt, ps, strict=True))
    return total / len(student)


def _sig(v):
    return 1 / (1 + math.exp(-v))


def _hand_bce(logits, targets):
    vals = [-(t * math.log(_sig(z)) + (1 - t) * math.log(1 - _sig(z)))
            for row, trow in zip(logits, targets, strict=True) for z, t in zip(row, trow, strict=True)]
    return sum(vals) / len(vals)


A0 = [[1.0, -0.5], [0.2, 0.3]]
A1 = [[0.5, 2.0, -1.0], [1.5, 0.0, 0.7]]
B0 = [[0.3, 0.1], [-1.0, 1.2]]
B1 = [[2.0, 0.4, -0.3], [0.0, 0.9, 1.1]]
T = 2.0


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_kd_joint_matches_hand_computation():
    got = kd_joint([_t(A0), _t(A1)], [_t(B0), _t(B1)], T)
    student = [a + b for a, b in zip(A0, A1, strict=True)]
    teacher = [a + b for a, b in zip(B0, B1, strict=True)]
    assert got.item() == pytest.approx(_hand_kd(student, teacher, T), rel=1e-6)


def test_kd_task_matches_hand_computation():
    got = kd_task([_t(A0), _t(A1)], [_t(B0), _t(B1)], T)
    assert got.item() == pytest.approx(_hand_kd(A0, B0, T) + _hand_kd(A1, B1, T), rel=1e-6)


def test_bce_kd_matches_hand_computation():
    got = bce_kd([_t(A0), _t(A1)], [_t(B0), _t(B1)])
    want = (_hand_bce(A0, [[_sig(v) for v in r] for r in B0])
            + _hand_bce(A1, [[_sig(v) for v in r] for r in B1]))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_bce_pred_matches_hand_computation():
    got = bce_pred(_t(A1), torch.tensor([1, 2]))
    assert got.item() == pytest.approx(_hand_bce(A1, [[0, 1, 0], [0, 0, 1]]), rel=1e-6)


def _shifted(rows, c):
    return _t([[v + c for v in r] for r in rows])


def test_kd_joint_blind_to_one_shift_of_all_old_logits():
    base = kd_joint([_t(A0), _t(A1)], [_t(B0), _t(B1)], T)
    shifted = kd_joint([_shifted(A0, 3.0), _shifted(A1, 3.0)], [_t(B0), _t(B1)], T)
    assert shifted.item() == pytest.approx(base.item(), rel=1e-9)


def test_kd_task_blind_to_per_task_shifts_while_kd_joint_is_not():
    outs, olds = [_t(A0), _t(A1)], [_t(B0), _t(B1)]
    shifted = [_shifted(A0, 3.0), _shifted(A1, -2.0)]
    assert kd_task(shifted, olds, T).item() == pytest.approx(kd_task(outs, olds, T).item(), rel=1e-9)
    assert abs(kd_joint(shifted, olds, T).item() - kd_joint(outs, olds, T).item()) > 1e-2


def test_bce_terms_see_shifts():
    outs, olds = [_t(A0), _t(A1)], [_t(B0), _t(B1)]
    shifted = [_shifted(A0, 3.0), _shifted(A1, 3.0)]
    assert abs(bce_kd(shifted, olds).item() - bce_kd(outs, olds).item()) > 1e-2
    y = torch.tensor([1, 2])
    assert abs(bce_pred(_shifted(A1, 1.5), y).item() - bce_pred(_t(A1), y).item()) > 1e-2


def test_mismatched_heads_are_rejected():
    with pytest.raises(ValueError, match="heads"):
        kd_joint([_t(A0)], [_t(B0), _t(B1)], T)
    with pytest.raises(ValueError, match="shape"):
        kd_task([_t(A0)], [_t(B1)], T)
    with pytest.raises(ValueError, match="T = 0"):
        kd_task([_t(A0)], [_t(B0)], 0)


def test_gradients_flow_to_the_student_only():
    a = _t(A0).requires_grad_()
    b = _t(B0).requires_grad_()
    kd_task([a], [b.detach()], T).backward()
    assert a.grad is not None and b.grad is None


def test_bce_pred_treats_other_tasks_labels_as_negatives():
    # label 5 is outside this 3-class head (an exemplar of an old task): all-zero target row
    got = bce_pred(_t(A1), torch.tensor([1, 5]))
    assert got.item() == pytest.approx(_hand_bce(A1, [[0, 1, 0], [0, 0, 0]]), rel=1e-6)
    got = bce_pred(_t(A1), torch.tensor([-2, 0]))
    assert got.item() == pytest.approx(_hand_bce(A1, [[0, 0, 0], [1, 0, 0]]), rel=1e-6)
