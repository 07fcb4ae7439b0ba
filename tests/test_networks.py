"""Backbones and the multi-head IncrementalNet."""

import pytest
import torch
import torch.nn.functional as F
from test_memory import make_net

from cil.networks import BACKBONES, IncrementalNet, make_backbone

SMALL_NETS = [("resnet32", 3, 32), ("resnet18", 3, 32), ("convnet", 1, 8)]


@pytest.mark.parametrize(
    "name, channels, size, dim",
    [("resnet32", 3, 32, 64), ("resnet18", 3, 32, 512), ("resnet18", 3, 64, 512), ("resnet18", 1, 64, 512),
     ("convnet", 1, 8, 128), ("convnet", 3, 32, 128), ("convnet", 1, 28, 128)],
)
def test_backbone_output_shapes(name, channels, size, dim):
    torch.manual_seed(0)
    backbone, d = make_backbone(name, channels, size)
    assert d == dim
    assert backbone(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_resnet18_small_input_stem():
    small, _ = make_backbone("resnet18", 3, 32)
    big, _ = make_backbone("resnet18", 3, 224)
    assert small.net.conv1.kernel_size == (3, 3) and small.net.conv1.stride == (1, 1)
    assert isinstance(small.net.maxpool, torch.nn.Identity)
    assert big.net.conv1.kernel_size == (7, 7)


def test_unknown_backbone_names_valid_ones():
    with pytest.raises(ValueError, match="resnet99") as err:
        make_backbone("resnet99", 3, 32)
    for name in BACKBONES:
        assert name in str(err.value)


def test_resnet32_parameter_count():
    backbone, _ = make_backbone("resnet32", 3, 32)
    n = sum(p.numel() for p in backbone.parameters())
    assert 0.45e6 < n < 0.48e6  # FACIL's ResNet-32 without its classifier: 466,256


def test_heads_and_offsets():
    net = make_net("convnet", 1, 8)
    assert net.task_cls == [] and net.task_offsets == []
    for n in (4, 3, 5):
        net.add_head(n)
    assert net.task_cls == [4, 3, 5]
    assert net.task_offsets == [0, 4, 7]
    assert net.num_classes == 12
    out, feats = net(torch.randn(3, 1, 8, 8), return_features=True)
    assert [o.shape for o in out] == [(3, 4), (3, 3), (3, 5)]
    assert feats.shape == (3, 128)
    assert net.features(torch.zeros(2, 1, 8, 8)).shape == (2, 128)


def test_forward_without_heads_raises():
    net = make_net("convnet", 1, 8)
    with pytest.raises(RuntimeError, match="add_head"):
        net(torch.randn(2, 1, 8, 8))


def test_head_stats_matches_manual():
    torch.manual_seed(0)
    net = make_net("convnet", 1, 8)
    net.add_head(3)
    net.add_head(2)
    with torch.no_grad():
        net.heads[1].bias.copy_(torch.tensor([1.0, 3.0]))
    stats = net.head_stats()
    assert len(stats) == 2
    for (norm, bias), head in zip(stats, net.heads, strict=True):
        assert norm == pytest.approx(torch.sqrt((head.weight ** 2).sum()).item(), rel=1e-6)
        assert bias == pytest.approx(head.bias.mean().item(), rel=1e-6)
    assert stats[1][1] == pytest.approx(2.0)


@pytest.mark.parametrize("name, channels, size", SMALL_NETS)
def test_same_seed_same_parameters(name, channels, size):
    def build():
        torch.manual_seed(123)
        net = make_net(name, channels, size)
        net.add_head(5)
        net.add_head(5)
        return net

    a, b = build(), build()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_state_dict_round_trip_after_adding_heads():
    torch.manual_seed(0)
    net = make_net("resnet32", 3, 32)
    net.add_head(10)
    net.add_head(10)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = net(x)
    fresh = make_net("resnet32", 3, 32)
    fresh.add_head(10)
    fresh.add_head(10)  # the caller re-adds the heads first
    fresh.load_state_dict(net.state_dict())
    fresh.eval()
    for a, b in zip(expected, fresh(x), strict=True):
        assert torch.equal(a, b)


def test_channels_last():
    net = make_net("resnet32", 3, 32).to(memory_format=torch.channels_last)
    net.add_head(4)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert net(x)[0].shape == (2, 4)
    assert net.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_freeze_backbone_and_its_batchnorm():
    net = make_net("convnet", 1, 8)
    net.add_head(2)
    net.freeze_backbone()
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.heads.parameters())
    net.train()
    net.freeze_bn()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)


@pytest.mark.parametrize("name, channels, size", SMALL_NETS)
def test_last_relu_switch(name, channels, size):
    torch.manual_seed(0)
    net = make_net(name, channels, size).eval()
    x = torch.randn(4, channels, size, size)
    with torch.no_grad():
        with_relu = net.features(x)
        net.set_last_relu(False)
        without = net.features(x)
    assert (with_relu >= 0).all()
    assert (without < 0).any()
    net.set_last_relu(True)
    with torch.no_grad():
        assert torch.equal(net.features(x), with_relu)


def test_add_head_follows_backbone_device_and_dtype():
    net = make_net("convnet", 1, 8).double()
    net.add_head(3)
    assert net.heads[0].weight.dtype == torch.float64


def test_convnet_learns_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    net = make_net("convnet", 1, 8)
    net.add_head(10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        net.train()
        order = train[torch.randperm(len(train), generator=g)]
        for batch in order.split(64):
            loss = F.cross_entropy(net(x[batch])[0], y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.inference_mode():
        acc = (net(x[test])[0].argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9


def test_incremental_net_wraps_any_backbone():
    net = IncrementalNet(torch.nn.Flatten(), 4)
    net.add_head(2)
    assert net(torch.randn(3, 1, 2, 2))[0].shape == (3, 2)
