"""The decoded-image cache: each class chunk decoded once per node, shared, invalidated, safe to race."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from benchmarks.fake_imagenet import write_fake_imagenet
from cil import ExperimentConfig, run
from cil.data import DataError, load_dataset
from cil.data.cache import LOG_NAME, decode_image, decode_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, TRAIN, TEST, SIZE = 6, 8, 3, 16


def read_log(folder: str | os.PathLike) -> list[dict]:
    """The records of the cache's decode log in ``folder`` (empty when nothing was decoded there)."""
    try:
        with open(os.path.join(os.fspath(folder), LOG_NAME), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_fake_imagenet(tmp_path_factory.mktemp("tree"), classes=CLASSES, train=TRAIN, test=TEST,
                               width=40, height=30, seed=3)


def _copy(tree, dest):
    import shutil

    shutil.copytree(tree, dest)
    return dest


def _decoded(ds, split="train"):
    s = getattr(ds, split)
    return torch.stack([torch.from_numpy(decode_image(p, SIZE)).permute(2, 0, 1) for p in s.paths])


def test_generated_tree_is_imagenet_shaped_and_seeded(tree, tmp_path):
    ds = load_dataset("imagenet100", tree, image_size=SIZE, cache_dir=tmp_path / "c")
    assert ds.num_classes == CLASSES and (len(ds.train), len(ds.test)) == (CLASSES * TRAIN, CLASSES * TEST)
    assert ds.class_names[:2] == ["n00000000", "n00000001"]
    with Image.open(ds.train.paths[0]) as img:
        assert img.format == "JPEG" and img.size == (40, 30)
    again = write_fake_imagenet(tmp_path / "again", classes=CLASSES, train=TRAIN, test=TEST, width=40,
                                height=30, seed=3)
    assert (again / "train/n00000002/5.JPEG").read_bytes() == (tree / "train/n00000002/5.JPEG").read_bytes()


def test_each_class_is_decoded_once_then_read_from_the_cache(tree, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    everything = torch.arange(len(ds.train))
    x = ds.train.take(everything)
    assert torch.equal(x, _decoded(ds))  # the cached images are the decoder's, in the asked order
    log = read_log(cache)
    assert len(log) == CLASSES and {r["images"] for r in log} == {TRAIN}
    assert len(list(cache.glob("*.npy"))) == CLASSES and not list(cache.glob("*.tmp"))
    # a second "trial" (a new data set object) reads the cache: no decode, the same bytes, any order
    again = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    order = torch.randperm(len(again.train), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.train.take(order), x[order])
    assert len(read_log(cache)) == CLASSES


def test_a_changed_file_or_another_size_is_never_read_from_an_old_chunk(tree, tmp_path):
    data = _copy(tree, tmp_path / "data")
    cache = tmp_path / "cache"
    ds = load_dataset("folder", data, image_size=SIZE, cache_dir=cache)
    before = ds.train.take(torch.arange(len(ds.train)))
    # rewrite one image of class 2 (new pixels, new size on disk and mtime)
    changed = data / "train" / "n00000002" / "0.JPEG"
    Image.new("RGB", (40, 30), (250, 10, 10)).save(changed, quality=95)
    fresh = load_dataset("folder", data, image_size=SIZE, cache_dir=cache)
    after = fresh.train.take(torch.arange(len(fresh.train)))
    assert torch.equal(after, _decoded(fresh))
    i = fresh.train.paths.index(str(changed))
    assert not torch.equal(after[i], before[i])
    log = read_log(cache)
    assert len(log) == CLASSES + 1 and log[-1]["images"] == TRAIN  # only class 2's chunk again
    # the same bytes with only a new modification time: a new key too
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    load_dataset("folder", data, image_size=SIZE, cache_dir=cache).train.take(torch.tensor([i]))
    assert len(read_log(cache)) == CLASSES + 2
    # another image size: other chunks, never the 16x16 ones
    other = load_dataset("folder", data, image_size=SIZE + 4, cache_dir=cache)
    y = other.train.take(torch.arange(len(other.train)))
    assert y.shape[-1] == SIZE + 4 and len(read_log(cache)) == 2 * CLASSES + 2


def test_a_damaged_chunk_is_decoded_again(tree, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    x = ds.train.take(torch.arange(len(ds.train)))
    victim = sorted(cache.glob("*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # half-copied, e.g. by hand
    again = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    assert torch.equal(again.train.take(torch.arange(len(again.train))), x)
    assert len(read_log(cache)) == CLASSES + 1


def test_an_unreadable_image_names_the_file_and_leaves_no_partial_chunk(tree, tmp_path):
    data = _copy(tree, tmp_path / "data")
    bad = data / "train" / "n00000001" / "3.JPEG"
    bad.write_bytes(b"not an image")
    cache = tmp_path / "cache"
    ds = load_dataset("folder", data, image_size=SIZE, cache_dir=cache)
    with pytest.raises(DataError, match="3.JPEG"):
        ds.train.take(torch.arange(len(ds.train)))
    assert not list(cache.glob("*.tmp"))
    assert {r["images"] for r in read_log(cache)} <= {TRAIN}  # only whole chunks were ever written


WORKER = """
import sys, torch
from cil.data import load_dataset
ds = load_dataset("folder", sys.argv[1], image_size=int(sys.argv[2]), cache_dir=sys.argv[3])
x = ds.train.take(torch.arange(len(ds.train)))
torch.save(x, sys.argv[4])
"""


def test_concurrent_trials_decode_each_chunk_once_and_all_read_the_same(tree, tmp_path):
    """Three processes decode the same split into one cache at once: every chunk is written once (the
    others wait for it, or take another chunk first), and all three get the decoder's bytes."""
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    outs = [tmp_path / f"x{i}.pt" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tree), str(SIZE), str(cache), str(o)],
                              env=env, cwd=ROOT) for o in outs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    xs = [torch.load(o) for o in outs]
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    assert all(torch.equal(x, _decoded(ds)) for x in xs)
    keys = [r["key"] for r in read_log(cache)]
    assert len(keys) == len(set(keys)) == CLASSES
    assert len({r["pid"] for r in read_log(cache)}) >= 1


def test_joint_decodes_every_image_once_over_all_tasks(tree, tmp_path):
    """Joint trains on tasks 0..t at task t; the earlier tasks come from the cache, not the decoder."""
    cache = tmp_path / "cache"
    cfg = ExperimentConfig.from_dict({"approach": "joint", "data.dataset": "folder", "data.data_root": str(tree),
                                      "data.image_size": SIZE, "data.num_tasks": 3, "data.cache_dir": str(cache),
                                      "model.network": "convnet", "train.nepochs": 1, "run.device": "cpu"})
    rows = [r for result in run(cfg) for r in result.task_rows]
    assert len(rows) == 6
    log = read_log(cache)
    assert len(log) == 2 * CLASSES  # each class's train and test chunk, once
    assert sum(r["images"] for r in log) == CLASSES * (TRAIN + TEST)


def test_decoder_threads_follow_the_trials_cpu_share(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert decode_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cpus + 50))  # never more than the CPUs we may run on
    assert decode_threads() == cpus
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert decode_threads() == cpus


def test_cache_dir_default_and_unwritable(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("CIL_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = load_dataset("folder", tree, image_size=SIZE)
    ds.test.take(torch.tensor([0]))
    assert len(read_log(tmp_path / "env-cache")) == 1
    blocked = tmp_path / "file"
    blocked.write_text("")
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=blocked / "cache")
    with pytest.raises(DataError, match="data.cache_dir"):
        ds.test.take(torch.tensor([0]))


def test_take_returns_the_callers_own_copy(tree, tmp_path):
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=tmp_path / "c")
    x = ds.test.take(torch.tensor([1, 0]))
    kept = x[0].clone()
    x[0].zero_()
    assert torch.equal(ds.test.take(torch.tensor([1]))[0], kept) and kept.sum() > 0
