"""The sweep's one table (tune/console.py), without Ray: its width, its line budget in a log, its
in-place redraw on a terminal, the ETA, and the snapshot `python -m tune status` reads back."""

from __future__ import annotations

import io
import re

from tune.console import WIDTH, Eta, LiveScreen, Snapshot, TrialLine, label, render, status_lines

APPROACHES = ["finetuning", "joint", "lwf", "lwf-s", "lwf-sr", "lwf-br", "lwf-br2", "lwf-bsr"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def quickstart(running: int = 2, done: int = 10, **extra) -> Snapshot:
    """24 trials as in the quickstart: ``done`` finished, ``running`` in training, the rest pending."""
    trials = []
    for i in range(24):
        state = "done" if i < done else "running" if i < done + running else "pending"
        trials.append(TrialLine(f"904fc_{i:05d}", APPROACHES[i % 8], str(i // 8), 5 if state == "done" else 3, 5,
                                17 if state == "running" else None, 25, 0.4321 if state != "pending" else None,
                                state))
    return Snapshot("quickstart", trials, elapsed_s=125.0, eta_s=190.0, **extra)


def test_the_table_names_approach_seed_task_epoch_loss_state_within_120_columns():
    lines = render(quickstart())
    assert lines[0] == "sweep quickstart: 10/24 done, 2 running, 12 pending | elapsed 2m05s | ETA 3m10s"
    assert lines[1].split() == ["trial", "approach", "seed", "task", "epoch", "loss", "state"]
    assert lines[12].split() == ["904fc_00010", "lwf", "1", "3/5", "17/25", "0.4321", "running"]
    assert len(lines) == 2 + 24 and max(map(len, lines)) <= WIDTH


def test_long_labels_give_way_so_that_no_line_is_wider_than_120():
    snap = quickstart()
    config = {"approach": "lwf-bsr", "loss.lamb": 0.123456789, "loss.w_task": 2.0, "memory.selection": "herding",
              "data.dataset": "synthetic:classes=50,channels=1,size=8,train=40" * 3}
    for t in snap.trials:
        t.label = label(config, list(config))
    snap.sweep = "a-very-long-sweep-name-" * 6
    lines = render(snap)
    assert max(map(len, lines)) == WIDTH
    assert "  lwf-bsr lamb=0.1235 w_task=2 selection=herding data" in lines[2] and lines[2].endswith("done")


def test_a_log_gets_the_header_and_the_running_trials_at_most_every_period():
    out, clock = io.StringIO(), Clock()
    screen = LiveScreen(out, tty=False, every_s=30.0, clock=clock)
    for step in range(600):  # ten minutes of Tune steps, one a second
        clock.now = float(step)
        screen.show(quickstart(running=2))
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 * (1 + 1 + 2)  # every 30 s: the header, the column names, two running trials
    assert "\x1b" not in out.getvalue() and max(map(len, lines)) <= WIDTH


def test_quiet_prints_the_header_alone():
    out, clock = io.StringIO(), Clock()
    screen = LiveScreen(out, tty=False, every_s=30.0, quiet=True, clock=clock)
    screen.show(quickstart())
    assert out.getvalue().splitlines() == [quickstart().header()]


def test_a_terminal_redraws_the_table_in_place_within_its_height():
    out, clock = io.StringIO(), Clock()
    screen = LiveScreen(out, tty=True, every_s=1.0, height=12, width=80, clock=clock)
    screen.show(quickstart())
    first = out.getvalue()
    assert first.startswith("\x1b[J") and len(first.splitlines()) == 11  # header, names, 8 rows, "... and"
    assert "running" in first and first.splitlines()[-1].startswith("... and ")
    assert max(map(len, first.splitlines()[1:])) < 80  # narrower than the window: no line wraps
    clock.now = 1.0
    screen.show(quickstart(done=11))
    assert out.getvalue()[len(first):].startswith("\x1b[11F\x1b[J")  # back over the 11 lines just drawn
    screen.note("trial 904fc_00003 failed: ValueError: boom")
    assert out.getvalue().endswith("\x1b[11F\x1b[Jtrial 904fc_00003 failed: ValueError: boom\n")


def test_the_eta_is_the_epochs_left_at_the_rate_measured_since_the_first_look():
    clock = Clock()
    eta = Eta(clock)
    assert eta.update(epochs_done=100, epochs_left=500) is None  # a resumed sweep's earlier epochs don't count
    clock.now = 10.0
    assert eta.update(epochs_done=100, epochs_left=500) is None  # nothing measured yet
    clock.now = 20.0
    assert eta.update(epochs_done=140, epochs_left=460) == 460 * 20.0 / 40


def test_status_renders_the_saved_snapshot_with_its_age_and_driver():
    snap = Snapshot.from_json(quickstart(written=1000.0).to_json())
    assert snap == quickstart(written=1000.0)
    lines = status_lines(snap, "host h, pid 7, started ..., last heartbeat 3 s ago", now=1042.0)
    assert lines[:-1] == render(quickstart())
    assert re.fullmatch(r"\(saved 42s ago; driver: host h, pid 7, .*\)", lines[-1])
    assert "no driver holds the sweep" in status_lines(snap, None, now=1042.0)[-1]
