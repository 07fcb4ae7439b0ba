"""FACIL's exemplar memory: budgets, the four selections, checkpoints."""

import io

import pytest
import torch
from torch import nn

from cil.memory import ExemplarMemory, distance_order, entropy_order, herding_order
from cil.networks import IncrementalNet, make_backbone

CPU = torch.device("cpu")


def make_net(name: str, in_channels: int, image_size: int) -> IncrementalNet:
    """A backbone in an IncrementalNet with no heads yet, as cil.loop builds one."""
    return IncrementalNet(*make_backbone(name, in_channels, image_size))


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def task_data(classes, per_class=30, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (len(classes) * per_class, 1, size, size), dtype=torch.uint8, generator=g)
    y = torch.tensor(classes).repeat_interleave(per_class)
    return x, y


class TableModel(nn.Module):
    """Fake IncrementalNet: pixel [0, 0, 0] of an image holds its row in fixed logit/feature tables."""

    def __init__(self, logits: torch.Tensor, task_cls: list[int], features: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("logits", logits.float())
        self.register_buffer("feats", features.float() if features is not None else logits.float())
        self.task_cls = task_cls
        self.calls = 0

    def forward(self, x, return_features=False):
        assert not self.training and torch.is_inference_mode_enabled()
        self.calls += 1
        idx = x[:, 0, 0, 0].long()
        out = list(self.logits[idx].split(self.task_cls, dim=1))
        return (out, self.feats[idx]) if return_features else out


def indexed_images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return x


def update(mem, model, x, y, seed=0, batch_size=16):
    mem.update(model, x, y, transform=(lambda b: b.float()) if isinstance(model, TableModel) else to_float,
               device=CPU, generator=torch.Generator().manual_seed(seed), batch_size=batch_size)


# ---- arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_exemplars": -1}, "num_exemplars"), ({"num_exemplars_per_class": 2.5}, "num_exemplars_per_class"),
     ({"num_exemplars": 10, "num_exemplars_per_class": 2}, "only one"),
     ({"selection": "kmeans"}, "kmeans.*random, herding, entropy, distance")],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExemplarMemory(**kwargs)


def test_disabled_memory_stores_nothing():
    mem = ExemplarMemory()
    assert not mem.enabled
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    update(mem, net, *task_data([0, 1]))
    assert mem.size == 0 and len(mem) == 0


def test_update_rejects_float_images():
    mem = ExemplarMemory(num_exemplars_per_class=2)
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    with pytest.raises(ValueError, match="uint8"):
        update(mem, net, torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))


# ---- budgets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["random", "herding", "entropy", "distance"])
def test_total_budget_shrinks_old_classes(selection):
    torch.manual_seed(0)
    net = make_net("convnet", 1, 8)
    mem = ExemplarMemory(num_exemplars=20, selection=selection)
    net.add_head(3)
    update(mem, net, *task_data([0, 1, 2], seed=1))
    assert mem.class_counts() == {0: 7, 1: 7, 2: 7}  # FACIL rounds ceil(20 / 3) up
    first = {c: {tuple(img.flatten().tolist()) for img in mem.x[mem.y == c]} for c in (0, 1, 2)}
    assert mem.x.dtype == torch.uint8 and mem.y.dtype == torch.int64 and mem.x.shape[1:] == (1, 8, 8)

    net.add_head(2)
    update(mem, net, *task_data([3, 4], seed=2))
    assert mem.class_counts() == {0: 4, 1: 4, 2: 4, 3: 4, 4: 4}
    assert mem.y.tolist() == sorted(mem.y.tolist())
    for c in (0, 1, 2):  # old classes keep a subset of what they had
        assert {tuple(img.flatten().tolist()) for img in mem.x[mem.y == c]} <= first[c]


def test_per_class_budget_grows_with_classes():
    net = make_net("convnet", 1, 8)
    mem = ExemplarMemory(num_exemplars_per_class=5, selection="herding")
    net.add_head(2)
    update(mem, net, *task_data([0, 1], seed=1))
    assert mem.class_counts() == {0: 5, 1: 5}
    net.add_head(3)
    update(mem, net, *task_data([2, 3, 4], seed=2))
    assert mem.class_counts() == {c: 5 for c in range(5)}
    assert mem.per_class_quota(100) == 5


def test_small_class_keeps_all_its_samples():
    net = make_net("convnet", 1, 8)
    mem = ExemplarMemory(num_exemplars=100)
    net.add_head(2)
    update(mem, net, *task_data([0, 1], per_class=6))
    assert mem.class_counts() == {0: 6, 1: 6}


# ---- selection rules ----------------------------------------------------------------------------------


def test_herding_first_pick_is_closest_to_mean():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.75], [1.0, 0.1]])
    order = herding_order(feats, 4)
    assert order[0].item() == 2  # the normalised sample closest to the mean direction
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert herding_order(feats, 2).tolist() == order[:2].tolist()


def test_herding_mean_beats_random_mean():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 16, generator=g) + 0.5
    normed = torch.nn.functional.normalize(feats, dim=1)
    mu = normed.mean(0)
    herd = (normed[herding_order(feats, 10)].mean(0) - mu).norm()
    rand = torch.stack([(normed[torch.randperm(200, generator=g)[:10]].mean(0) - mu).norm()
                        for _ in range(50)])
    assert herd < rand.min()


def test_herding_through_memory_uses_model_features():
    feats = torch.randn(40, 8, generator=torch.Generator().manual_seed(3))
    model = TableModel(torch.zeros(40, 2), [2], features=feats)
    mem = ExemplarMemory(num_exemplars_per_class=5, selection="herding")
    x, y = indexed_images(40), torch.tensor([0, 1]).repeat(20)
    update(mem, model, x, y)
    for c in (0, 1):
        idx = torch.nonzero(y == c).flatten()
        expected = idx[herding_order(feats[idx], 5)]
        assert mem.x[mem.y == c][:, 0, 0, 0].long().tolist() == expected.tolist()


def test_entropy_picks_highest_entropy():
    # class 0 = rows 0..5; rows 1 and 4 are nearly uniform, the rest confident.
    logits = torch.tensor([[9.0, 0, 0, 0], [0.1, 0, 0, 0], [5, 0, 0, 0], [7, 1, 0, 0], [0, 0.2, 0, 0],
                           [8, 0, 0, 0]])
    assert entropy_order(logits)[:2].tolist() == [1, 4]
    model = TableModel(logits, [2, 2])  # two heads: entropy is over their concatenation
    mem = ExemplarMemory(num_exemplars_per_class=2, selection="entropy")
    update(mem, model, indexed_images(6), torch.zeros(6, dtype=torch.long))
    assert mem.x[:, 0, 0, 0].tolist() == [1, 4]


def test_distance_picks_lowest_own_class_logit():
    # classes 2 (rows 0..3) and 3 (rows 4..7); own-class logit lowest in rows 2 and 5.
    logits = torch.zeros(8, 4)
    logits[:4, 2] = torch.tensor([3.0, 2.0, -1.0, 5.0])
    logits[4:, 3] = torch.tensor([4.0, 0.5, 6.0, 1.0])
    assert distance_order(logits[:4], 2).tolist() == [2, 1, 0, 3]
    model = TableModel(logits, [2, 2])
    mem = ExemplarMemory(num_exemplars_per_class=1, selection="distance")
    update(mem, model, indexed_images(8), torch.tensor([2, 2, 2, 2, 3, 3, 3, 3]))
    assert mem.x[:, 0, 0, 0].tolist() == [2, 5]
    assert mem.y.tolist() == [2, 3]


def test_random_does_not_run_the_model():
    model = TableModel(torch.zeros(10, 2), [2])
    mem = ExemplarMemory(num_exemplars_per_class=3, selection="random")
    update(mem, model, indexed_images(10), torch.tensor([0, 1]).repeat(5))
    assert model.calls == 0 and mem.size == 6


# ---- determinism, model state, checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("selection", ["random", "herding"])
def test_same_inputs_and_generator_same_selection(selection):
    torch.manual_seed(0)
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    x, y = task_data([0, 1], seed=4)
    a = ExemplarMemory(num_exemplars=10, selection=selection)
    b = ExemplarMemory(num_exemplars=10, selection=selection)
    update(a, net, x, y, seed=7)
    update(b, net, x, y, seed=7)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    if selection == "random":
        c = ExemplarMemory(num_exemplars=10, selection=selection)
        update(c, net, x, y, seed=8)
        assert not torch.equal(a.x, c.x)


def test_training_modes_restored():
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    net.train()
    net.freeze_bn()  # mixed modes: heads training, BatchNorm in eval
    before = {name: m.training for name, m in net.named_modules()}
    update(ExemplarMemory(num_exemplars=6, selection="herding"), net, *task_data([0, 1]))
    assert {name: m.training for name, m in net.named_modules()} == before


def test_state_dict_round_trip_weights_only():
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    mem = ExemplarMemory(num_exemplars=10, selection="entropy")
    update(mem, net, *task_data([0, 1]))
    buf = io.BytesIO()
    torch.save(mem.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    fresh = ExemplarMemory(num_exemplars=10, selection="entropy")
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.x, mem.x) and torch.equal(fresh.y, mem.y)
    assert fresh.class_counts() == {0: 5, 1: 5}
    with pytest.raises(ValueError, match="selection"):
        ExemplarMemory(num_exemplars=10, selection="random").load_state_dict(loaded)
