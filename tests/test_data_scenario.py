"""FACIL's scenario in cil.data: class order from the seed, classes per task, remapping, validation."""

import pytest
import torch

from cil.data import DataError, classes_per_task, load_dataset, make_scenario


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None)


def test_class_order_depends_on_the_seed_only(digits):
    a = make_scenario(digits, 5, None, seed=1)
    b = make_scenario(load_dataset("digits", None), 2, 4, seed=1, val_fraction=0.3)
    c = make_scenario(digits, 5, None, seed=2)
    assert a.class_order == b.class_order
    assert a.class_order != c.class_order
    assert sorted(a.class_order) == list(range(10))


def test_every_class_in_exactly_one_task(digits):
    sc = make_scenario(digits, 4, None, seed=0)
    assert sc.taskcla == [(0, 3), (1, 3), (2, 2), (3, 2)]  # FACIL: remainder to the first tasks
    assert sum(n for _, n in sc.taskcla) == sc.num_classes == 10
    assert sc.offsets == [0, 3, 6, 8]
    assert [sc.classes_seen(t) for t in range(4)] == [3, 6, 8, 10]
    owners = {}
    for t, n in sc.taskcla:
        for split in ("train", "val", "test"):
            _, y = sc.task_split(t, split)
            assert y.dtype == torch.int64
            assert y.min() >= sc.offsets[t] and y.max() < sc.offsets[t] + n
            for label in y.unique().tolist():
                assert owners.setdefault(label, t) == t
    assert sorted(owners) == list(range(10))
    assert sc.task_of_label.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]


def test_nc_first_task(digits):
    sc = make_scenario(digits, 4, 4, seed=0)
    assert sc.taskcla == [(0, 4), (1, 2), (2, 2), (3, 2)]
    assert classes_per_task(100, 6, 50) == [50, 10, 10, 10, 10, 10]
    assert classes_per_task(10, 4, 3) == [3, 3, 2, 2]
    assert classes_per_task(10, 1, 10) == [10]


def test_labels_are_remapped_through_the_order(digits):
    sc = make_scenario(digits, 2, None, seed=5)
    for t in range(2):
        idx = sc.task_indices(t, "test")
        _, y = sc.task_split(t, "test")
        original = digits.test.labels[idx]
        assert [sc.class_order[v] for v in y.tolist()] == original.tolist()
    # all test samples are used once
    assert sum(len(sc.task_indices(t, "test")) for t in range(2)) == len(digits.test)


def test_validation_split_per_class_and_disjoint(digits):
    sc = make_scenario(digits, 2, None, seed=3, val_fraction=0.1)
    train_all, val_all = [], []
    for t in range(2):
        tr, va = sc.task_indices(t, "train"), sc.task_indices(t, "val")
        assert not set(tr.tolist()) & set(va.tolist())
        train_all += tr.tolist()
        val_all += va.tolist()
        _, y_tr = sc.task_split(t, "train")
        _, y_va = sc.task_split(t, "val")
        for c in y_tr.unique().tolist():
            n_tr, n_va = int((y_tr == c).sum()), int((y_va == c).sum())
            assert n_va == round((n_tr + n_va) * 0.1)
    assert sorted(train_all + val_all) == list(range(len(digits.train)))
    again = make_scenario(digits, 2, None, seed=3, val_fraction=0.1)
    assert torch.equal(again.task_indices(0, "val"), sc.task_indices(0, "val"))
    other = make_scenario(digits, 2, None, seed=4, val_fraction=0.1, class_order=sc.class_order)
    assert not torch.equal(other.task_indices(0, "val"), sc.task_indices(0, "val"))


def test_no_validation_and_tiny_classes():
    ds = load_dataset("synthetic:classes=4,train=3,test=1", None)
    sc = make_scenario(ds, 2, None, seed=0, val_fraction=0.1)
    assert len(sc.task_split(0, "val")[1]) == 2  # at least one per class, even where round() gives 0
    assert len(sc.task_split(0, "train")[1]) == 4
    sc0 = make_scenario(ds, 2, None, seed=0, val_fraction=0.0)
    assert len(sc0.task_split(0, "val")[1]) == 0 and len(sc0.task_split(0, "train")[1]) == 6


def test_explicit_class_order_may_be_a_subset(digits):
    sc = make_scenario(digits, 2, None, seed=0, class_order=[9, 3, 1, 0])
    assert sc.num_classes == 4 and sc.taskcla == [(0, 2), (1, 2)]
    x, y = sc.task_split(1, "test")
    assert set(digits.test.labels[sc.task_indices(1, "test")].tolist()) == {1, 0}
    assert set(y.tolist()) == {2, 3} and x.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_tasks": 0}, "num_tasks = 0"),
    ({"num_tasks": 11}, "num_tasks = 11"),
    ({"num_tasks": 4, "nc_first_task": 8}, "nc_first_task = 8 leaves 2"),
    ({"num_tasks": 1, "nc_first_task": 4}, "nc_first_task = 4"),
    ({"num_tasks": 2, "nc_first_task": 0}, "nc_first_task = 0"),
    ({"num_tasks": 2, "val_fraction": 1.0}, "val_fraction = 1.0"),
    ({"num_tasks": 2, "seed": -1}, "seed = -1"),
    ({"num_tasks": 2, "seed": 1.5}, "seed = 1.5"),
    ({"num_tasks": 2, "class_order": [0, 0, 1]}, "repeats"),
    ({"num_tasks": 2, "class_order": [0, 12]}, "out of range: \\[12\\]"),
])
def test_invalid_values_name_the_value(digits, kwargs, message):
    args = {"nc_first_task": None, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=message):
        make_scenario(digits, **args)


def test_bad_task_or_split(digits):
    sc = make_scenario(digits, 2, None, seed=0)
    with pytest.raises(DataError, match="task 2"):
        sc.task_split(2, "train")
    with pytest.raises(DataError, match="'valid'"):
        sc.task_split(0, "valid")


def _facil_reference(train_labels, num_tasks, seed, val_fraction):
    """FACIL's get_data as its code reads (global seeding, lists, random.sample), re-derived here."""
    import random

    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        random.seed(seed)
        np.random.seed(seed)
        order = list(range(10))
        np.random.shuffle(order)
        cpt = classes_per_task(10, num_tasks, None)
        ends = np.cumsum(cpt)
        init = np.concatenate(([0], ends[:-1]))
        tasks = [{"x": [], "y": []} for _ in range(num_tasks)]
        for i, label in enumerate(train_labels):
            new = order.index(label)
            t = int((new >= ends).sum())
            tasks[t]["x"].append(i)
            tasks[t]["y"].append(new - init[t])
        val = []
        for t in range(num_tasks):
            for cc in range(cpt[t]):
                cls_idx = list(np.where(np.asarray(tasks[t]["y"]) == cc)[0])
                pick = random.sample(cls_idx, int(np.round(len(cls_idx) * val_fraction)))
                val += [tasks[t]["x"][j] for j in pick]
        return order, sorted(val)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_same_order_and_validation_as_facil_for_a_seed(digits, seed):
    order, val = _facil_reference(digits.train.labels.tolist(), 3, seed, 0.1)
    sc = make_scenario(digits, 3, None, seed=seed)
    assert sc.class_order == order
    assert sorted(torch.cat([sc.task_indices(t, "val") for t in range(3)]).tolist()) == val
