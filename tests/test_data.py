"""Data sets of cil.data: loaders on small local fakes of every on-disk layout, and their errors."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.fake_cifar100 import write_fake_cifar100
from cil.data import ICARL_CLASS_ORDER, AugmentSpec, DataError, FileImageSet, load_dataset, make_scenario

# ---------------------------------------------------------------- in-memory sets


def test_digits_loads_all_images():
    ds = load_dataset("digits", None)
    assert len(ds.train) + len(ds.test) == 1797
    assert ds.num_classes == 10 and ds.channels == 1 and ds.image_size == 8
    for s in (ds.train, ds.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 8, 8)
        assert s.labels.dtype == torch.int64
        assert sorted(s.labels.unique().tolist()) == list(range(10))
    assert int(ds.train.images.max()) == 255  # 0..16 scaled to 0..255
    assert 0.15 < len(ds.test) / 1797 < 0.25
    assert len(ds.mean) == len(ds.std) == 1 and not ds.augment.active
    assert ds.class_order is None


def test_digits_image_size_override():
    ds = load_dataset("digits", None, image_size=16)
    assert ds.image_size == 16 and ds.train.take(torch.arange(3)).shape == (3, 1, 16, 16)


def test_synthetic_is_seeded_and_configurable():
    ds = load_dataset("synthetic", None)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (1000, 200, 10)
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.augment.pad == 4 and ds.augment.flip
    again = load_dataset("synthetic", None)
    assert torch.equal(ds.train.images, again.train.images)
    small = load_dataset("synthetic:classes=4,train=5,test=2,size=8,channels=1,seed=3", None)
    assert small.train.images.shape == (20, 1, 8, 8) and len(small.test) == 8 and small.num_classes == 4
    with pytest.raises(DataError, match="colour"):
        load_dataset("synthetic:colour=3", None)


# ---------------------------------------------------------------- torchvision layouts


def test_cifar100_reads_a_folder_that_fails_md5(tmp_path):
    write_fake_cifar100(tmp_path, n_train=1000, n_test=200)
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (1000, 200, 100)
    assert ds.train.take(torch.tensor([0, 5])).shape == (2, 3, 32, 32)
    assert ds.mean == (0.5071, 0.4866, 0.4409) and ds.std == (0.2009, 0.1984, 0.2023)
    assert ds.augment == AugmentSpec(pad=4, crop="resized", flip=True) and ds.class_order is None
    shifted = load_dataset("cifar100", tmp_path, download=False, augment="crop")
    assert shifted.augment == AugmentSpec(pad=4, crop="shift", flip=True)
    with pytest.raises(DataError, match="augment = 'zoom' is not valid: choose one of facil, crop, none"):
        load_dataset("cifar100", tmp_path, download=False, augment="zoom")
    assert ds.class_names[:2] == ["class_00", "class_01"]
    # pixels come through unchanged: row 0 of the pickle is image 0 in CHW order
    import pickle

    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    assert torch.equal(ds.train.images[0].reshape(-1), torch.from_numpy(raw["data"][0]))
    assert ds.train.labels.tolist() == raw["fine_labels"]


def test_cifar100_fixed_icarl_order(tmp_path):
    assert sorted(ICARL_CLASS_ORDER) == list(range(100)) and ICARL_CLASS_ORDER[:3] == [68, 56, 78]
    write_fake_cifar100(tmp_path, n_train=1000, n_test=200)
    ds = load_dataset("cifar100", tmp_path, download=False, fixed_class_order=True)
    assert ds.class_order == ICARL_CLASS_ORDER
    sc = make_scenario(ds, num_tasks=10, nc_first_task=None, seed=123)
    assert sc.class_order == ICARL_CLASS_ORDER  # the fixed order wins over the seed
    idx = sc.task_indices(0, "test")
    orig = ds.test.labels[idx]
    _, labels = sc.task_split(0, "test")
    for o, new in zip(orig.tolist(), labels.tolist(), strict=True):
        assert ICARL_CLASS_ORDER[new] == o


def test_cifar100_missing_without_download(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", tmp_path / "nothing", download=False)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 + array.ndim  # 0x08: unsigned byte
    with open(path, "wb") as f:
        f.write(struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_through_torchvision(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    y_tr, y_te = np.arange(30) % 10, np.arange(10)
    _write_idx(raw / "train-images-idx3-ubyte", x_tr)
    _write_idx(raw / "train-labels-idx1-ubyte", y_tr)
    _write_idx(raw / "t10k-images-idx3-ubyte", x_te)
    _write_idx(raw / "t10k-labels-idx1-ubyte", y_te)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.train.images.shape == (30, 1, 28, 28) and len(ds.test) == 10
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(x_tr.astype(np.uint8)))
    assert ds.train.labels.tolist() == y_tr.tolist()
    assert ds.mean == (0.1307,) and not ds.augment.active


def test_svhn_mat_files(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN: 1..10, 10 = digit 0
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        if split == "train":
            x_train, y_train = x, y
    ds = load_dataset("svhn", tmp_path, download=False)
    assert ds.train.images.shape == (20, 3, 32, 32) and len(ds.test) == 10
    assert torch.equal(ds.train.images[3], torch.from_numpy(x_train[:, :, :, 3].transpose(2, 0, 1).copy()))
    assert ds.train.labels.tolist() == [int(v) % 10 for v in y_train[:, 0]]
    assert sorted(ds.train.labels.unique().tolist()) == list(range(10))


# ---------------------------------------------------------------- file-backed sets

COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255), "emu": (0, 255, 0)}


def _image(path: Path, colour, size=(40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _image_folder(root: Path, test_dir="test", per_class=3) -> None:
    for split in ("train", test_dir):
        for name, colour in COLOURS.items():
            for i in range(per_class):
                ext = "png" if i % 2 else "JPEG"
                _image(root / split / name / f"{i}.{ext}", colour, size=(40 + 8 * i, 40))


def test_folder_image_folder_tree(tmp_path):
    _image_folder(tmp_path)
    ds = load_dataset("folder", tmp_path)
    assert isinstance(ds.train, FileImageSet)
    assert ds.num_classes == 3 and ds.class_names == ["cat", "dog", "emu"] and ds.image_size == 32
    assert (len(ds.train), len(ds.test)) == (9, 9)
    x = ds.train.take(torch.arange(len(ds.train)))
    assert x.dtype == torch.uint8 and x.shape == (9, 3, 32, 32)
    for img, label in zip(x, ds.train.labels.tolist(), strict=True):
        colour = torch.tensor(COLOURS[ds.class_names[label]], dtype=torch.float32)
        assert (img.float().mean((1, 2)) - colour).abs().max() < 8  # JPEG is close, PNG exact
    assert ds.augment == AugmentSpec(crop="resized", flip=True)  # FACIL's ImageNet-style crop


def test_imagenet100_image_folder_with_val_and_size(tmp_path):
    _image_folder(tmp_path / "imagenet100", test_dir="val")
    ds = load_dataset("imagenet100", tmp_path, image_size=24)  # finds root/imagenet100
    assert ds.image_size == 24 and ds.test.take(torch.tensor([0, 8])).shape == (2, 3, 24, 24)
    assert ds.mean == (0.485, 0.456, 0.406) and ds.augment == AugmentSpec(crop="resized", flip=True)
    assert load_dataset("imagenet100", tmp_path, image_size=24, augment="crop").augment.pad == 3
    with pytest.raises(DataError, match="100 classes"):
        load_dataset("imagenet100", tmp_path, fixed_class_order=True)


def test_imagenet100_facil_lists(tmp_path):
    lines = {"train": [], "test": []}
    for split in lines:
        for label, colour in enumerate(COLOURS.values()):
            for i in range(2):
                rel = f"imgs/{split}/{label}_{i}.png"
                _image(tmp_path / rel, colour)
                lines[split].append(f"{rel} {label}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    ds = load_dataset("imagenet100", tmp_path)
    assert ds.num_classes == 3 and (len(ds.train), len(ds.test)) == (6, 6)
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    x = ds.train.take(torch.tensor([2]))
    assert x.shape == (1, 3, 224, 224) and x[0, :, 5, 5].tolist() == [0, 0, 255]
    sc = make_scenario(ds, num_tasks=3, nc_first_task=None, seed=0, val_fraction=0.0)
    imgs, labels = sc.task_split(1, "train")
    assert imgs.shape == (2, 3, 224, 224) and labels.tolist() == [1, 1]


# ---------------------------------------------------------------- errors


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(DataError, match=r"'cifar10'.*digits.*cifar100"):
        load_dataset("cifar10", None)
    assert issubclass(DataError, ValueError)


def test_no_fixed_order_for_digits():
    with pytest.raises(DataError, match="fixed class order"):
        load_dataset("digits", None, fixed_class_order=True)


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        load_dataset("folder", missing)
    with pytest.raises(DataError, match="nowhere"):
        load_dataset("imagenet100", missing)
    with pytest.raises(DataError, match="needs a data folder"):
        load_dataset("folder", None)


def test_folder_without_test_or_with_empty_class(tmp_path):
    _image(tmp_path / "train" / "cat" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="neither test/ nor val/"):
        load_dataset("folder", tmp_path)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(DataError, match=r"dog.*holds no images"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DataError, match="no training data"):
        load_dataset("folder", tmp_path / "train")


@pytest.mark.parametrize("line, message", [
    ("imgs/a.png", "line 2.*is not 'path label'"),
    ("imgs/a.png cat", "line 2.*is not 'path label'"),
    ("imgs/missing.png 0", "line 2.*missing.png.*does not exist"),
])
def test_malformed_list_lines(tmp_path, line, message):
    _image(tmp_path / "imgs" / "a.png", (0, 0, 0))
    (tmp_path / "train.txt").write_text(f"imgs/a.png 0\n{line}\n")
    (tmp_path / "test.txt").write_text("imgs/a.png 0\n")
    with pytest.raises(DataError, match=message) as info:
        load_dataset("imagenet100", tmp_path)
    assert "train.txt" in str(info.value)


def test_unreadable_image_names_the_file(tmp_path):
    _image_folder(tmp_path, per_class=1)
    (tmp_path / "train" / "cat" / "0.JPEG").write_bytes(b"not an image")
    ds = load_dataset("folder", tmp_path)
    with pytest.raises(DataError, match="0.JPEG"):
        ds.train.take(torch.arange(len(ds.train)))
