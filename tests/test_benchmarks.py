"""The speed yardstick of benchmarks/: the CIFAR-shaped writer and the FACIL-style loop run as documented."""

import json
import pickle

import numpy as np
import pytest

from benchmarks import facil_style_loop
from benchmarks.fake_cifar100 import write_fake_cifar100
from cil import bench


def test_fake_cifar100_has_torchvisions_layout_and_balanced_classes(tmp_path):
    folder = write_fake_cifar100(tmp_path, n_train=300, n_test=100, seed=1)
    assert folder == tmp_path / "cifar-100-python"
    with open(folder / "train", "rb") as f:
        train = pickle.load(f)
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f)
    assert train["data"].dtype == np.uint8 and train["data"].shape == (300, 3072)
    assert np.bincount(train["fine_labels"], minlength=100).tolist() == [3] * 100
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20
    again = write_fake_cifar100(tmp_path / "again", n_train=300, n_test=100, seed=1)
    with open(again / "train", "rb") as f:
        assert np.array_equal(pickle.load(f)["data"], train["data"])  # seeded


def test_fake_cifar100_rejects_uneven_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_train = 150"):
        write_fake_cifar100(tmp_path, n_train=150)


def test_facil_style_loop_prints_both_rates(tmp_path, capsys):
    write_fake_cifar100(tmp_path, n_train=1000, n_test=100)
    facil_style_loop.main([str(tmp_path), "--batch", "16", "--workers", "0", "--limit", "48",
                           "--warmup-batches", "1", "--epochs", "2"])
    out = json.loads(capsys.readouterr().out)
    assert out["finetuning_img_s"] > 0 and out["lwf_img_s"] > 0 and out["augment"] == "facil"


def test_both_loops_time_the_same_window_on_the_same_default_device(tmp_path, capsys):
    """The fair comparison: the same warm-up, timer start and stop, statistic and epochs (not timings)."""
    write_fake_cifar100(tmp_path, n_train=1000, n_test=100)
    window = ["--limit", "48", "--warmup-batches", "1", "--epochs", "2"]
    facil_style_loop.main([str(tmp_path), "--batch", "16", "--workers", "1", *window])
    facil = json.loads(capsys.readouterr().out)
    assert bench.main(["--data-root", str(tmp_path), "--batch-size", "16", "--network", "resnet32",
                       "--approaches", "lwf", *window]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["window"] == facil["window"]
    assert ours["window"]["warmup_batches"] == 1 and ours["window"]["epochs"] == 2
    assert ours["window"]["statistic"] == "median" and "after the warm-up" in ours["window"]["timer_starts"]
    assert ours["device"] == facil["device"]  # both default to auto
    assert ours["finetuning_img_s"] > 0 and ours["lwf_img_s"] > 0


def test_a_warm_up_that_leaves_nothing_to_time_is_refused(tmp_path, capsys):
    write_fake_cifar100(tmp_path, n_train=1000, n_test=100)
    assert bench.main(["--data-root", str(tmp_path), "--batch-size", "16", "--network", "convnet",
                       "--approaches", "lwf", "--limit", "32", "--warmup-batches", "2"]) == 2
    assert "--warmup-batches 2 of 16 leave no image of 32 to time" in capsys.readouterr().err


def test_facil_style_loop_transforms_are_facils():
    facil = [type(t).__name__ for t in facil_style_loop.train_transform("facil").transforms]
    crop = [type(t).__name__ for t in facil_style_loop.train_transform("crop").transforms]
    assert facil == ["Pad", "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert crop == ["Pad", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]


@pytest.mark.slow  # every step of the GPU check on the CPU (about 80 s)
def test_gpu_check_runs_every_step_in_its_quick_cpu_mode(tmp_path, capsys):
    """benchmarks/gpu_check.py, the one command prepared for a GPU machine, cannot rot: its small mode."""
    from benchmarks import gpu_check

    out_file = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads(printed[0])
    assert result == json.loads(out_file.read_text())
    bench, facil = result["bench"]["fp32"], result["bench"]["facil"]
    assert bench["finetuning_img_s"] > 0 and facil["finetuning_img_s"] > 0 and bench["window"] == facil["window"]
    assert "skipped" in result["bench"]["compiled"]
    assert result["trials"]["1"]["aggregate_img_s"] > 0 and len(result["trials"]["2"]["peak_mib"]) == 2
    assert result["pytest"]["rc"] in (0, 5) and "skipped" in result["pytest"]["summary"]  # no CUDA here
    assert "| cil.bench fp32 |" in "\n".join(printed) and "| concurrent trials |" in "\n".join(printed)
    assert "skipped" in result["portable"] and "portable CPU digest" in "\n".join(printed)
