"""The epochs table (training curves) end to end: python -m cil writes it per task, analysis reads and
plots it, ``--log tensorboard`` writes the same curves as TensorBoard event files."""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import analysis
from cil.results_schema import EPOCH_COLUMNS

NEPOCHS = 3


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``folder``: tag -> [(step, value)], read from the raw
    records (TFRecord framing: length, its CRC, an Event protobuf, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event files under {folder}"
    for file in files:
        data, pos = file.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def lwf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("res")
    out = subprocess.run([sys.executable, "-m", "cil", "--results-path", str(root), "--approach", "lwf",
                          "--datasets", "digits", "--num-tasks", "2", "--nepochs", str(NEPOCHS), "--device", "cpu",
                          "--network", "convnet", "--quiet", "--log", "disk", "tensorboard"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return root / "digits_lwf"


def test_the_cli_writes_one_epochs_row_per_task_and_epoch(lwf_run):
    df = analysis.load_epochs(lwf_run / "results")
    assert set(EPOCH_COLUMNS) <= set(df.columns)
    assert sorted(zip(df["task"], df["epoch"], strict=True)) == [(t, e) for t in (0, 1) for e in range(1, NEPOCHS + 1)]
    assert set(df["sweep"]) == {"digits_lwf"} and set(df["approach"]) == {"lwf"} and df["trial_id"].nunique() == 1
    assert (df["lr"] == 0.1).all() and (df["seconds"] > 0).all() and df["val_acc_taw"].between(0, 1).all()
    assert (df["train_loss"] > 0).all() and (df["val_loss"] > 0).all()
    # LwF's distillation term exists from task 1 on (null before), and the terms add up to the loss
    kd = df.set_index("task")["term.kd_joint"]
    assert kd.loc[0].isna().all() and (kd.loc[1] > 0).all()
    terms = df.filter(like="term.").fillna(0.0).sum(axis=1)
    assert np.allclose(terms, df["train_loss"], rtol=1e-4)
    # the finished trial's part files were merged into one file per table
    assert [p.name for p in (lwf_run / "results" / "epochs").iterdir()] == [f"{df['trial_id'][0]}.parquet"]


def test_tensorboard_event_files_hold_the_epochs_tables_curves(lwf_run):
    df = analysis.load_epochs(lwf_run / "results")
    trial = df["trial_id"][0]
    scalars = read_events(lwf_run / "tensorboard" / trial)
    for t in (0, 1):
        rows = df[df["task"] == t].sort_values("epoch")
        for column, tag in (("train_loss", "train_loss"), ("val_loss", "valid_loss"), ("lr", "train_lr"),
                            ("val_acc_taw", "valid_acc_taw")):
            steps, values = zip(*scalars[f"t{t}/{tag}"], strict=True)
            assert list(steps) == list(range(1, NEPOCHS + 1))
            assert np.allclose(values, rows[column], rtol=1e-6), (t, tag)
    assert "t1/train_kd_joint" in scalars and "t0/train_kd_joint" not in scalars
    task_results = analysis.load(lwf_run / "results")
    after_1 = task_results[task_results["task"] == 1].sort_values("eval_task")
    assert [s for s, _ in scalars["t1/test_acc_tag"]] == [0, 1]
    assert np.allclose([v for _, v in scalars["t1/test_acc_tag"]], after_1["acc_tag"], rtol=1e-6)
    assert [s for s, _ in scalars["results/avg_acc_tag"]] == [0, 1]


def test_learning_curves_figure_on_its_own_and_in_the_callers_axes(lwf_run):
    epochs = analysis.load_epochs(lwf_run / "results")
    df = analysis.load(lwf_run / "results")
    fig = analysis.plot_learning_curves(epochs, df)
    assert len(fig.axes) == 3
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == list(range(1, 2 * NEPOCHS + 1))  # both tasks' epochs, in order
    assert np.allclose(line.get_ydata(), epochs.sort_values(["task", "epoch"])["train_loss"])
    assert any(list(v.get_xdata()) == [NEPOCHS + 0.5] * 2 for v in fig.axes[0].lines[1:])  # task 1 starts
    own = Figure()
    ax = own.subplots()
    assert analysis.plot_learning_curves(epochs, ax=ax, values="term.kd_joint") is own
    assert ax.get_title().endswith("loss term kd_joint") and len(ax.lines[0].get_xdata()) == NEPOCHS
    with pytest.raises(analysis.ResultsError, match="not valid: choose from"):
        analysis.plot_learning_curves(epochs, values="accuracy")
    with pytest.raises(analysis.ResultsError, match="not a epochs frame"):
        analysis.plot_learning_curves(df)


def test_a_bad_epochs_file_is_named(tmp_path):
    bad = pd.DataFrame([dict(sweep="s", trial_id="a", approach="lwf", seed=0, task=0, epoch=0, train_loss=1.0,
                             val_loss=1.0, val_acc_taw=0.5, lr=0.1, seconds=1.0)])
    (tmp_path / "epochs").mkdir()
    bad.to_parquet(tmp_path / "epochs" / "a.parquet")
    with pytest.raises(analysis.ResultsError, match="a.parquet: 1 rows break the schema: needs task >= 0 and epoch"):
        analysis.load_epochs(tmp_path)


BLOCK_TORCH = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Blocker())
"""


def test_the_cli_parser_and_help_need_no_torch():
    """``cil --help`` works in the light install: the parser is built without importing torch, and a
    run started there says which extra to install."""
    code = BLOCK_TORCH + """
from cil.cli import build_parser
assert build_parser().parse_args(["--lr", "0.5", "--log", "tensorboard"]).lr == 0.5
from cil.extras import cil_main
sys.argv = ["cil", "--help"]
try:
    cil_main()
except SystemExit as end:
    assert end.code == 0
sys.argv = ["cil", "--nepochs", "1"]
print("run:", cil_main())
print("torch loaded:", "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m cil" in out.stdout and "--log [LOGGER ...]" in out.stdout
    assert "run: 2" in out.stdout and "torch loaded: False" in out.stdout
    assert "pip install 'cil-sweeps[cil]'" in out.stderr
