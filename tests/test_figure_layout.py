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
