"""Every figure of ``python -m analysis --out``, drawn from the quickstart's results at the default size:
no two pieces of text overlap, none leaves the figure, and no legend covers plotted data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import quickstart_results as qs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

import analysis
from analysis import figures


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return qs.write(str(tmp_path_factory.mktemp("storage") / "quickstart" / "results"))


@pytest.fixture(scope="module")
def drawn(results):
    """The figures as the CLI writes them (analysis.cli.write_figures)."""
    df = figures.prepare(analysis.load(results))
    heads, epochs = analysis.load_heads(results), analysis.load_epochs(results)
    return {"accuracy.png": figures.plot_accuracy(df),
            "acc_matrix_tag.png": figures.plot_accuracy_matrix(df, metric="acc_tag"),
            "acc_matrix_taw.png": figures.plot_accuracy_matrix(df, metric="acc_taw"),
            "forgetting.png": figures.plot_forgetting(df),
            "head_norms.png": figures.plot_head_norms(heads, df),
            "learning_curves.png": figures.plot_learning_curves(epochs, df)}


def drawn_ticklabels(fig: Figure) -> set[int]:
    """ids of the tick labels matplotlib draws: those of ticks inside each axis' view interval."""
    shown = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if low - span <= tick.get_loc() <= high + span:
                    shown.update(id(t) for t in (tick.label1, tick.label2) if t.get_visible())
    return shown


def text_boxes(fig: Figure) -> list[tuple[str, object]]:
    """(text, window extent) of every visible, non-empty Text the figure draws: suptitle, titles, axis
    labels, tick labels, legend entries, annotations, colorbar labels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = drawn_ticklabels(fig)
    all_ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                 for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    boxes = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or (id(text) in all_ticks and id(text) not in ticks):
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        boxes.append((text.get_text(), text.get_window_extent(renderer)))
    return boxes


def test_no_two_texts_overlap_and_none_leaves_the_figure(drawn):
    for name, fig in drawn.items():
        boxes = text_boxes(fig)
        assert len(boxes) > 20, name  # titles, labels, ticks and legend entries were all found
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
            assert not box_a.overlaps(box_b), f"{name}: {a!r} overlaps {b!r}"
        page = fig.bbox
        for text, box in boxes:
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                f"{name}: {text!r} leaves the figure"


def test_legends_cover_no_data(drawn):
    for name, fig in drawn.items():
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        if name.startswith("acc_matrix"):
            assert not legends  # one heatmap per group, named by its title
            continue
        assert len(legends) == 1, name  # one legend for every panel: the groups share their colours
        for ax in fig.axes:
            assert not figures.covers_data(ax, legends[0], renderer), name


def test_the_setting_is_in_the_figure_title_and_long_names_are_shortened(drawn, tmp_path):
    for name, fig in drawn.items():
        # the data set's short name: its options (classes=50,channels=1,...) are the spec's business
        assert "synthetic, 5 tasks" in fig.get_suptitle() and qs.DATASET not in fig.get_suptitle(), name
        assert all("synthetic" not in ax.get_title() for ax in fig.axes), name
    # On the caller's narrow axes the setting stays in the panel title, cut in its middle to fit.
    long_name = "a_data_set_with_a_long_name_and_no_options_to_leave_out"
    results = qs.write(str(tmp_path / "long" / "results"), dataset=long_name, approaches=qs.APPROACHES[:2])
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    figures.plot_accuracy(analysis.load(results), ax=ax)
    title = ax.get_title()
    assert "…" in title and title.endswith("5 tasks\ntask-agnostic (TAg)") and title.startswith("a_data")
    boxes = text_boxes(fig)
    page = fig.bbox
    assert all(page.x0 <= b.x0 and b.x1 <= page.x1 for t, b in boxes if t == title)
    # a legend inside the small axes would cover the curves: it moved outside them
    assert not figures.covers_data(ax, ax.get_legend(), fig.canvas.get_renderer())
    assert np.all(np.isfinite(ax.lines[0].get_ydata()))


def test_approaches_in_the_registrys_order_with_distinct_styles(drawn):
    fig = drawn["accuracy.png"]
    labels = [text.get_text().split(" (n=")[0] for text in fig.legends[0].get_texts()]
    assert labels == list(qs.APPROACHES)  # finetuning, joint, lwf, lwf-s, ...: the paper's families
    lines = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in fig.axes[0].lines}
    assert len(lines) == len(qs.APPROACHES)
    styles = [tuple(figures.style(i).values()) for i in range(12)]
    assert len(set(styles)) == 12 and len({s[0] for s in styles[:8]}) == 8  # 8 colours, then styles differ


def test_ticks_sit_on_tasks(drawn):
    accuracy = drawn["accuracy.png"].axes[0]
    assert list(accuracy.get_xticks()) == [10, 20, 30, 40, 50]  # classes seen after each task
    assert list(drawn["forgetting.png"].axes[0].get_xticks()) == [0, 1, 2, 3]
    curves = drawn["learning_curves.png"].axes[0]
    starts = [0.5 + qs.EPOCHS * t for t in range(qs.NUM_TASKS)]  # where each task's first epoch begins
    assert list(curves.get_xticks()) == starts
    assert [t.get_text() for t in curves.get_xticklabels()] == ["0", "25", "50", "75", "100"]


def test_identical_curves_are_named_in_a_note(drawn):
    """The quickstart-shaped heads give every approach the same bias means, and all but lwf the same
    weight norms: the lines hide each other, and the panel says so."""
    norm, bias = drawn["head_norms.png"].axes[:2]

    def note(ax):
        [found] = [a for a in ax.get_children() if a.get_gid() == figures.IDENTICAL_NOTE]
        return " ".join(found.get_title().get_text().split())

    assert note(bias) == "identical curves: " + " = ".join(qs.APPROACHES)
    assert note(norm) == "identical curves: " + " = ".join(a for a in qs.APPROACHES if a != "lwf")
    assert not [a for a in drawn["accuracy.png"].axes[0].get_children() if a.get_gid() == figures.IDENTICAL_NOTE]


def test_accuracy_matrices_are_readable(drawn):
    fig = drawn["acc_matrix_taw.png"]
    panels = [ax for ax in fig.axes if ax.images]
    assert len({round(ax.get_position().y0, 3) for ax in panels[:3]}) == 1  # three panels a row
    assert len({round(ax.get_position().y0, 3) for ax in panels[:4]}) == 2
    # task-aware accuracies of ~93-98%: the colours span that range, not 0-100 in one shade of yellow
    low, high = panels[0].images[0].get_clim()
    assert low >= 85 and high <= 100
    colours = {tuple(np.round(panels[0].images[0].to_rgba(v), 2)) for v in (93.0, 97.0)}
    assert len(colours) == 2
    sizes = {text.get_fontsize() for text in panels[0].texts}
    assert len(panels[0].texts) == 15 and min(sizes) >= 8  # every cell's number, readable


def test_no_performance_warning_on_a_real_sweeps_width(tmp_path):
    """A real sweep's rows carry ~130 config columns, one Arrow block each: every public function and
    figure must build its frames at once (pandas warns when columns are added one by one)."""
    import warnings

    config = {f"{section}.key_{i}": float(i) for section in ("train", "loss", "data", "model") for i in range(30)}
    results = qs.write(str(tmp_path / "results"), approaches=("finetuning", "lwf"), config=config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = analysis.load(results)
        trials = analysis.trial_metrics(df)
        analysis.summary(df, baseline="lwf")
        curves = analysis.curves(df)
        curves["gap"] = curves["acc_taw"] - curves["acc_tag"]  # a user's own column: no warning either
        analysis.final_forgetting(df)
        figures.plot_head_norms(analysis.load_heads(results), df)
        figures.plot_learning_curves(analysis.load_epochs(results), df)
        figures.plot_accuracy_matrix(df)
        trials["x"] = 1.0


def test_short_data_set_names_keep_only_what_tells_settings_apart():
    from analysis.groups import setting_titles

    assert setting_titles([("synthetic:classes=50,channels=1", 5), ("synthetic:classes=20,channels=1", 5),
                           ("cifar100", 10)]) == ["synthetic (classes=50), 5 tasks", "synthetic (classes=20), 5 tasks",
                                                  "cifar100, 10 tasks"]
    assert setting_titles([(qs.DATASET, 5), (qs.DATASET, 10)]) == ["synthetic, 5 tasks", "synthetic, 10 tasks"]


def test_vector_files_are_the_same_for_the_same_figure(drawn):
    fig = drawn["forgetting.png"]
    svg = figures.to_bytes(fig, "svg")
    assert svg.startswith(b"<?xml") and b"<svg" in svg[:400] and svg == figures.to_bytes(fig, "svg")
    pdf = figures.to_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF-") and b"CreationDate" not in pdf and pdf == figures.to_bytes(fig, "pdf")
