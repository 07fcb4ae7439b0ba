"""The paper's figures as matplotlib Figures: one line per group, a ±1 std band over seeds.

Figures are built on the Agg canvas directly (no pyplot state), so they work headless, in the CLI
and in notebooks alike (a notebook displays the returned Figure). One row of panels per
(dataset, num_tasks) setting: different benchmarks are never drawn as one line. Every ``plot_*``
also draws into the caller's axes (``ax=``: one Axes, or one per panel) to fit their own subplots.

One module of about 550 lines on purpose: every figure shares the style (colours, line styles, markers,
task ticks, the identical-curves note, the setting titles), and splitting the figures from it would put
half of each figure's look in another file.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.errors import ResultsError
from analysis.groups import group_keys, group_trials, labels, setting_titles
from analysis.metrics import Steps, steps
from analysis.trials import trial_codes
from cil.results_schema import EPOCH_COLUMNS, EPOCHS, HEAD_COLUMNS, HEADS, SETTING_COLUMNS, TERM_PREFIX, TRIAL_KEYS

By = str | Sequence[str] | None
AxesLike = Any  # a matplotlib Axes, or a sequence / array of them
_BAND_NOTE = "line: mean over seeds; band: ±1 std"
# Up to 12 groups get a distinct (colour, line style, marker): the Okabe-Ito colours (yellow left out,
# too pale on white; they stay apart for colour-blind readers), line styles shifted every 8 groups so
# group i and i + 8 share a colour but not a style, and 12 markers. Past 12, styles repeat.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7F7F7F")
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
IDENTICAL_NOTE = "identical-curves"  # the gid of the note naming coinciding curves in a panel
_VECTOR_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def style(i: int) -> dict[str, Any]:
    """Line style of the ``i``-th group: colour, line style and marker (``Axes.plot`` keywords)."""
    return {"color": _COLOURS[i % len(_COLOURS)],
            "linestyle": _LINESTYLES[(i + i // len(_COLOURS)) % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)]}


def to_bytes(fig: Figure, fmt: str = "png", dpi: float = 100) -> bytes:
    """The figure as a PNG, PDF or SVG file's bytes; vector files carry no date and fixed element ids,
    so a figure of the same results is the same file."""
    import io

    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context({"svg.hashsalt": "cil-sweeps"}):
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=_VECTOR_METADATA.get(fmt, {}))
    return buffer.getvalue()


@dataclass
class Prepared:
    """task_results checked and averaged once (``prepare(df)``), to draw several figures of a large
    results set without redoing that work; every ``plot_*`` accepts it in place of ``df``."""

    steps: Steps
    rows: pd.DataFrame
    codes: np.ndarray


Frame = pd.DataFrame | Prepared


def prepare(df: Frame) -> Prepared:
    return df if isinstance(df, Prepared) else Prepared(*steps(df))


class _Groups:
    """Trials of ``df`` assigned to groups (code -1: left out, else in the registry's approach order),
    with labels, line styles and the settings' titles."""

    def __init__(self, trials: pd.DataFrame, by: By, include_partial: bool):
        self.keys = group_keys(trials, by)
        used = trials["complete"].to_numpy(dtype=bool) | include_partial
        if not used.any():
            raise ResultsError(f"no complete trials to plot ({len(trials)} partial trials; "
                               "use include_partial=True)")
        self.code = np.full(len(trials), -1)
        self.code[used], self.groups = group_trials(trials.loc[used], self.keys)
        self.labels = labels(self.groups, self.keys)
        style_of = {label: style(i) for i, label in enumerate(dict.fromkeys(self.labels))}
        self.styles = [style_of[label] for label in self.labels]  # one label, one style, in every panel
        settings = self.groups[list(SETTING_COLUMNS)].drop_duplicates()
        self.settings = [tuple(row) for row in settings.itertuples(index=False)]
        self.setting_of = [self.settings.index(tuple(row)) for row in
                           self.groups[list(SETTING_COLUMNS)].itertuples(index=False)]
        self.titles = setting_titles(self.settings)


def _figure(rows: int, cols: int, width: float = 5.6, height: float = 3.9) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _grid(ax: AxesLike, rows: int, columns: tuple[str, ...], chosen: Sequence[str] | str | None, what: str,
          **size: float) -> tuple[Figure, np.ndarray, tuple[str, ...], bool]:
    """The panels to draw: rows (settings) x columns (``chosen`` of ``columns``), on a new figure or on
    the caller's ``ax`` (row-major). Without ``chosen``, an ``ax`` holding one Axes per row gets the
    first column only. Returns the figure, a (rows, columns) array of Axes, the columns, and whether
    the figure is ours (then it gets a title)."""
    if isinstance(chosen, str):
        chosen = (chosen,)
    if chosen is not None:
        bad = [c for c in chosen if c not in columns]
        if bad or not chosen:
            raise ResultsError(f"{what}: panels {list(chosen)!r} are not valid: choose from {list(columns)}")
    if ax is None:
        cols = tuple(chosen or columns)
        fig, axes = _figure(rows, len(cols), **size)
        return fig, axes, cols, True
    flat = np.asarray(ax, dtype=object).reshape(-1)
    if chosen is not None:
        cols = tuple(chosen)
    else:
        cols = columns if flat.size == rows * len(columns) else columns[:1]
    if flat.size != rows * len(cols):
        counts = sorted({rows * len(cols), rows * len(columns)} if chosen is None else {rows * len(cols)})
        hint = "; or filter df to one (dataset, num_tasks) setting" if rows > 1 else ""
        raise ResultsError(f"{what}: ax holds {flat.size} Axes, but {rows} setting(s) x panels "
                           f"({' / '.join(chosen or columns)}) need {' or '.join(map(str, counts))}{hint}")
    return flat[0].figure, flat.reshape(rows, len(cols)), cols, False


def _bands(group: np.ndarray, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Mean, std and count of y per (group, x), for rows with a group and a value."""
    frame = pd.DataFrame({"g": group, "x": x, "y": y})
    frame = frame[(frame["g"] >= 0) & frame["y"].notna()]
    return frame.groupby(["g", "x"], sort=True)["y"].agg(["mean", "std", "count"]).reset_index()


def _draw(ax, bands: pd.DataFrame, groups: _Groups, setting: int, scale: float = 100.0,
          ticks: bool = True) -> None:
    """One line with a ±1 std band per group of ``setting``; x from ``xplot`` when bands has it.
    ``ticks``: x ticks at the data's x values (one per task) when there are at most 20 of them.
    Lines that coincide (one hides the others) are named in a note in the panel."""
    drawn: list[tuple[int, np.ndarray, np.ndarray]] = []
    same_as: dict[int, int] = {}
    for g, part in bands.groupby("g", sort=True):
        if groups.setting_of[g] != setting:
            continue
        x = part["xplot" if "xplot" in part.columns else "x"].to_numpy()
        mean = part["mean"].to_numpy() * scale
        std = np.nan_to_num(part["std"].to_numpy() * scale)
        ax.plot(x, mean, markersize=4, linewidth=1.6, markevery=max(1, len(x) // 15), **groups.styles[g],
                label=f"{groups.labels[g]} (n={int(part['count'].max())})")
        ax.fill_between(x, mean - std, mean + std, color=groups.styles[g]["color"], alpha=0.12, linewidth=0)
        twin = next((h for h, hx, hm in drawn if _same_curve(hx, hm, x, mean)), None)
        if twin is not None:
            same_as[g] = same_as.get(twin, twin)
        drawn.append((g, x, mean))
    ax.grid(True, alpha=0.3)
    xs = np.unique(np.concatenate([d[1] for d in drawn])) if drawn else np.zeros(0)
    if ticks and 0 < len(xs) <= 20:
        ax.set_xticks(xs, [f"{v:g}" for v in np.round(xs, 1)])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if same_as:
        clusters: dict[int, list[int]] = {}
        for g, head in same_as.items():
            clusters.setdefault(head, [head]).append(g)
        _note(ax, "; ".join(" = ".join(groups.labels[g] for g in members) for members in clusters.values()))


def _note(ax, text: str) -> None:
    """A note about a panel's curves ("identical curves: a = b"), wrapped to the panel's width and put
    where it covers the fewest points (a handle-less legend, so the panel's own legend stays free)."""
    from matplotlib.legend import Legend

    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72
    lines = textwrap.wrap(f"identical curves: {text}", max(20, int(width_pt / 4.5)))  # x-small: ~4.5 pt a char
    note = Legend(ax, [], [], title="\n".join(lines), title_fontsize="x-small", loc="best", framealpha=0.85,
                  borderpad=0.3, alignment="left")
    note.set_gid(IDENTICAL_NOTE)
    ax.add_artist(note)


def _same_curve(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> bool:
    """Whether two curves would be drawn on top of each other (same points up to rounding)."""
    if x0.shape != x1.shape or not np.allclose(x0, x1):
        return False
    span = max(1e-12, float(np.nanmax(np.abs(np.concatenate([y0, y1])), initial=0.0)))
    return bool(np.allclose(y0, y1, rtol=0, atol=1e-6 * span, equal_nan=True))


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", frameon=False)


def _titles(setting_texts: Sequence[str], own: bool) -> tuple[list[str | None], str | None]:
    """Where each row's setting (``cifar100, 10 tasks``) is written: in the figure's title when the
    figure is ours and shows one setting (panel titles then name only the panel), else on top of
    each panel's title. Returns the per-row panel prefix (None: none) and the suptitle's part."""
    if own and len(setting_texts) == 1:
        return [None], setting_texts[0]
    return list(setting_texts), None


def _panel_title(ax, prefix: str | None, name: str, **kw: Any) -> None:
    ax.set_title(name if prefix is None else f"{prefix}\n{name}", **kw)


def _finish(fig: Figure, axes: Sequence, own: bool, headline: str, setting: str | None,
            note: str | None = _BAND_NOTE) -> Figure:
    """Titles, legends and their fit: on our own figure one legend outside the panels (every panel
    shares the groups' colours) and the headline with the setting as the figure's title; on the
    caller's axes one legend per panel, moved outside it when it would cover data. Titles too wide
    for their panel (or the figure) are shortened in the middle of their longest line."""
    axes = [ax for ax in np.asarray(axes, dtype=object).reshape(-1) if ax.get_visible()]
    if own:
        title = headline if setting is None else f"{headline}: {setting}"
        fig.suptitle(title if note is None else f"{title}\n({note})")
        handles: dict[str, Any] = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small",
                       frameon=False)
    else:
        for ax in axes:
            _legend(ax)
    _fit(fig, axes)
    return fig


def _fit(fig: Figure, axes: Sequence) -> None:
    fig.draw_without_rendering()  # lays the figure out (on any canvas): panel sizes are known from here
    moved = False
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None and covers_data(ax, legend):
            ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1),
                      borderaxespad=0)
            moved = True
    if moved:  # a legend beside its panel narrows it
        fig.draw_without_rendering()
    for ax in axes:
        _shorten(ax.title, ax.get_window_extent().width)
    if fig._suptitle is not None:
        _shorten(fig._suptitle, fig.bbox.width)


def _shorten(text, width: float) -> None:
    """Cut the middle of ``text``'s longest line (a long data set name) until it fits ``width`` pixels."""
    lines = text.get_text().split("\n")
    longest = max(range(len(lines)), key=lambda i: len(lines[i]))
    line = lines[longest]
    keep = len(line)
    while keep > 8 and text.get_window_extent().width > width:
        keep -= 2
        lines[longest] = f"{line[: keep // 2]}…{line[len(line) - keep // 2:]}"
        text.set_text("\n".join(lines))


def covers_data(ax, legend, renderer=None) -> bool:
    """Whether any point of the axes' lines falls inside the legend's box (in display pixels)."""
    box = legend.get_window_extent(renderer)
    for line in ax.get_lines():
        xy = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float))
        inside = ((xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1))
        if inside.any():
            return True
    return False


def plot_accuracy(df: Frame, by: By = ("approach",), include_partial: bool = False, *, ax: AxesLike = None,
                  kinds: Sequence[str] | str | None = None) -> Figure:
    """Average TAg and TAw accuracy (mean over tasks seen) against the number of classes seen.

    ``kinds``: "tag" and/or "taw" panels (default both; TAg only when ``ax`` is a single Axes)."""
    s = prepare(df).steps
    groups = _Groups(s.trials, by, include_partial)
    trial, task = np.nonzero(s.present)
    g = groups.code[trial]
    # x: the mean number of classes seen after each task, per group.
    classes = _bands(g, task, s.values["classes_seen"][trial, task])[["g", "x", "mean"]]
    classes = classes.rename(columns={"mean": "xplot"})
    fig, axes, kinds, own = _grid(ax, len(groups.settings), ("tag", "taw"), kinds, "plot_accuracy")
    prefixes, setting = _titles(groups.titles, own)
    for row, _ in enumerate(groups.settings):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            bands = _bands(g, task, s.values[f"acc_{kind}"][trial, task]).merge(classes, on=["g", "x"])
            _draw(ax, bands, groups, row)
            _panel_title(ax, prefixes[row], "task-agnostic (TAg)" if kind == "tag" else "task-aware (TAw)")
            ax.set_xlabel("number of classes seen")
            ax.set_ylabel("average accuracy (%)")
    return _finish(fig, axes, own, "Average accuracy after each task", setting)


def plot_accuracy_matrix(df: Frame, by: By = ("approach",), metric: str = "acc_tag",
                         include_partial: bool = False, *, ax: AxesLike = None) -> Figure:
    """Mean accuracy matrix acc[t, u] over the seeds of each group, one heatmap per group (``ax``: one
    Axes per group)."""
    if metric not in ("acc_tag", "acc_taw"):
        raise ResultsError(f"metric {metric!r} is not valid: use 'acc_tag' or 'acc_taw'")
    p = prepare(df)
    s, rows, codes = p.steps, p.rows, p.codes
    groups = _Groups(s.trials, by, include_partial)
    width = s.present.shape[1]
    n_groups = len(groups.groups)
    g = groups.code[codes]
    keep = g >= 0
    t = rows["task"].to_numpy(dtype=np.int64)[keep]
    u = rows["eval_task"].to_numpy(dtype=np.int64)[keep]
    cell = (g[keep] * width + t) * width + u
    value = rows[metric].to_numpy(dtype=np.float64, na_value=np.nan)[keep]
    size = n_groups * width * width
    ok = ~np.isnan(value)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.bincount(cell[ok], weights=value[ok], minlength=size)
        mean = total / np.bincount(cell[ok], minlength=size)
    mean = mean.reshape(n_groups, width, width) * 100
    own = ax is None
    if own:
        cols = min(3, n_groups)
        fig, axes = _figure(math.ceil(n_groups / cols), cols, width=4.2, height=3.8)
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if axes.size != n_groups:
            raise ResultsError(f"plot_accuracy_matrix draws one heatmap per group ({n_groups}) but ax holds "
                               f"{axes.size} Axes")
        fig = axes[0].figure
    image = None
    prefixes, setting = _titles(groups.titles, own)
    norm = _accuracy_norm(mean)
    cmap = colormaps["viridis"]
    for i, ax in enumerate(axes.flat):
        if i >= n_groups:
            ax.set_visible(False)
            continue
        tasks = int(groups.groups["num_tasks"].iloc[i])
        matrix = mean[i, :tasks, :tasks]
        image = ax.imshow(np.ma.masked_invalid(matrix), norm=norm, cmap=cmap, origin="upper")
        size = _cell_font_size(ax, tasks)
        if size is not None:
            for (ti, ui), v in np.ndenumerate(matrix):
                if not np.isnan(v):
                    r, g_, b, _ = cmap(norm(v))
                    dark = 0.2126 * r + 0.7152 * g_ + 0.0722 * b < 0.5
                    ax.text(ui, ti, f"{v:.0f}", ha="center", va="center", fontsize=size,
                            color="white" if dark else "black")
        _panel_title(ax, prefixes[groups.setting_of[i]], groups.labels[i], fontsize="medium")
        ticks = np.arange(0, tasks, max(1, math.ceil(tasks / 10)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task")
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label=f"{metric} (%), mean over seeds")
    kind = "task-agnostic (TAg)" if metric == "acc_tag" else "task-aware (TAw)"
    note = "mean over seeds" if norm.vmin == 0 else f"mean over seeds; colours span {norm.vmin:g}-{norm.vmax:g}%"
    return _finish(fig, axes, own, f"Accuracy matrix, {kind}", setting, note=note)


def _accuracy_norm(mean: np.ndarray) -> Normalize:
    """One colour scale for every panel (so colours compare across groups) over the range the values
    use, widened to multiples of 5 points: task-aware accuracies of 93-98% get the whole colour map
    instead of one shade of yellow."""
    if not np.isfinite(mean).any():
        return Normalize(0, 100)
    low, high = float(np.nanmin(mean)), float(np.nanmax(mean))
    vmin = max(0.0, math.floor(low / 5) * 5)
    vmax = min(100.0, max(vmin + 5, math.ceil(high / 5) * 5))
    return Normalize(vmin, vmax)


def _cell_font_size(ax, tasks: int) -> float | None:
    """Font size (points) for the numbers in a heatmap's cells: what fits a cell of this panel,
    at most 10; None (no numbers) below 6 points, where they cannot be read."""
    fig = ax.figure
    box = ax.get_position()
    side = min(box.width * fig.get_figwidth(), box.height * fig.get_figheight()) * 72 / tasks
    size = min(10.0, side / 2.2)  # "100" is about 1.8 font sizes wide; keep a margin
    return size if size >= 6 else None


def plot_forgetting(df: Frame, by: By = ("approach",), include_partial: bool = False, *, ax: AxesLike = None,
                    kinds: Sequence[str] | str | None = None) -> Figure:
    """Forgetting of each earlier task after the last task, forg[T-1, u] for u < T-1, TAg and TAw
    (``kinds`` as in plot_accuracy)."""
    p = prepare(df)
    s, rows, codes = p.steps, p.rows, p.codes
    groups = _Groups(s.trials, by, include_partial)
    t = rows["task"].to_numpy(dtype=np.int64)
    u = rows["eval_task"].to_numpy(dtype=np.int64)
    keep = (t == s.last[codes]) & (u < t)
    g = groups.code[codes][keep]
    fig, axes, kinds, own = _grid(ax, len(groups.settings), ("tag", "taw"), kinds, "plot_forgetting")
    prefixes, setting = _titles(groups.titles, own)
    for row, _ in enumerate(groups.settings):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            value = rows[f"forg_{kind}"].to_numpy(dtype=np.float64, na_value=np.nan)[keep]
            _draw(ax, _bands(g, u[keep], value), groups, row)
            _panel_title(ax, prefixes[row], "task-agnostic (TAg)" if kind == "tag" else "task-aware (TAw)")
            ax.set_xlabel("task")
            ax.set_ylabel("forgetting after the last task (%)")
            if not ax.lines:
                ax.text(0.5, 0.5, "no earlier task to forget", ha="center", va="center",
                        transform=ax.transAxes)
    return _finish(fig, axes, own, "Forgetting per task", setting)


def _side_trials(side: pd.DataFrame, df: Frame | None, required: Sequence[str], what: str,
                 row_columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    """The trials of a table beside task_results (heads, epochs) for ``_Groups``: per row its trial
    code and task; the trials frame; per code its trial's index in that frame (-1: not plotted) and
    its last task. With ``df`` the trials are task_results' (config columns, dataset/num_tasks,
    complete); without it, the table's own columns less ``row_columns``, split by number of tasks."""
    missing = [c for c in required if c not in side.columns]
    if missing:
        raise ResultsError(f"not a {what} frame: missing column(s) {', '.join(map(repr, missing))}")
    if len(side) == 0:
        raise ResultsError(f"the {what} frame has no rows")
    codes, first = trial_codes(side)
    task = side["task"].to_numpy(dtype=np.int64)
    last = np.zeros(len(first), dtype=np.int64)
    np.maximum.at(last, codes, task)
    if df is not None:
        s = prepare(df).steps
        trials = s.trials.assign(_last=s.last)
        info = side.iloc[first][list(TRIAL_KEYS)].reset_index(drop=True).assign(_h=np.arange(len(first)))
        info = info.merge(trials, on=list(TRIAL_KEYS), how="inner")
        if len(info) == 0:
            raise ResultsError(f"no trial of {what} appears in task_results (matched on sweep, trial_id)")
        trials = info.sort_values("_h").reset_index(drop=True)
        last_of = np.full(len(first), -1)
        last_of[trials["_h"].to_numpy()] = trials["_last"].to_numpy()
        trial_of = np.full(len(first), -1)
        trial_of[trials["_h"].to_numpy()] = np.arange(len(trials))
        return codes, task, trials, trial_of, last_of
    trials = side.iloc[first].drop(columns=[c for c in row_columns if c in side.columns]).reset_index(drop=True)
    trials["dataset"] = what
    trials["num_tasks"] = last + 1
    # Without task_results, num_tasks is unknown: a trial that got as far as the furthest
    # trial of its sweep counts as complete.
    furthest = pd.Series(last).groupby(trials["sweep"].to_numpy()).transform("max").to_numpy()
    trials["complete"] = last == furthest
    return codes, task, trials, np.arange(len(first)), last


def plot_head_norms(heads: pd.DataFrame, df: Frame | None = None, by: By = ("approach",),
                    include_partial: bool = False, *, ax: AxesLike = None,
                    values: Sequence[str] | str | None = None) -> Figure:
    """Per-head weight norm and bias mean after each trial's last task: the imbalance diagnostic.
    ``values``: "weight_norm" and/or "bias_mean" panels (default both; the norm only when ``ax`` is
    a single Axes).

    With ``df`` (task_results), groups may use any config column, partial trials are left out and
    settings are split by dataset/num_tasks; without it, ``by`` must name columns of ``heads`` and
    trials are split by their number of heads.
    """
    codes, task, trials, trial_of, last_of = _side_trials(heads, df, HEAD_COLUMNS, HEADS,
                                                          ("task", "head", "weight_norm", "bias_mean"))
    groups = _Groups(trials, by, include_partial)
    keep = (trial_of[codes] >= 0) & (task == last_of[codes])
    g = np.where(keep, groups.code[np.maximum(trial_of[codes], 0)], -1)
    head = heads["head"].to_numpy(dtype=np.int64)
    fig, axes, values, own = _grid(ax, len(groups.settings), ("weight_norm", "bias_mean"), values,
                                   "plot_head_norms")
    texts = {"weight_norm": "weight norm (L2)", "bias_mean": "bias mean"}
    row_texts = groups.titles if df is not None else [f"{st[1]} heads" for st in groups.settings]
    prefixes, setting = _titles(row_texts, own)
    for row, _ in enumerate(groups.settings):
        for col, name in enumerate(values):
            text = texts[name]
            ax = axes[row, col]
            value = heads[name].to_numpy(dtype=np.float64, na_value=np.nan)
            _draw(ax, _bands(g, head, value), groups, row, scale=1.0)
            _panel_title(ax, prefixes[row], f"{text} per head")
            ax.set_xlabel("head (task)")
            ax.set_ylabel(text)
    return _finish(fig, axes, own, "Heads after the last task", setting)


LEARNING_VALUES = ("train_loss", "val_loss", "val_acc_taw", "lr")
_LEARNING_TEXT = {"train_loss": "training loss", "val_loss": "validation loss",
                  "val_acc_taw": "validation TAw accuracy (%)", "lr": "learning rate"}


def plot_learning_curves(epochs: pd.DataFrame, df: Frame | None = None, by: By = ("approach",),
                         include_partial: bool = False, *, ax: AxesLike = None,
                         values: Sequence[str] | str | None = None) -> Figure:
    """Training curves from the epochs table (``analysis.load_epochs``): each trial's epochs of all its
    tasks in order on one x axis (dotted lines where a new task starts, when every trial of a setting
    agrees on it), mean ± std over the trials of a group. ``values``: panels among training loss,
    validation loss, validation TAw accuracy, lr and any loss term column ``term.<name>`` (default the
    first three; the training loss only when ``ax`` is a single Axes).

    ``df`` (task_results) and ``by``/``include_partial`` work as in :func:`plot_head_norms`.
    """
    terms = tuple(c for c in epochs.columns if str(c).startswith(TERM_PREFIX))
    row_columns = [*EPOCH_COLUMNS[EPOCH_COLUMNS.index("task"):], *terms]
    codes, task, trials, trial_of, _ = _side_trials(epochs, df, EPOCH_COLUMNS, EPOCHS, row_columns)
    groups = _Groups(trials, by, include_partial)
    keep = trial_of[codes] >= 0
    g = np.where(keep, groups.code[np.maximum(trial_of[codes], 0)], -1)
    epoch = epochs["epoch"].to_numpy(dtype=np.int64)
    order = np.lexsort((epoch, task, codes))
    running = np.empty(len(epochs), dtype=np.int64)  # the epoch's place in its trial's whole run
    running[order] = pd.Series(codes[order]).groupby(codes[order]).cumcount().to_numpy() + 1
    chosen = values if values is not None or ax is not None else LEARNING_VALUES[:3]
    fig, axes, values, own = _grid(ax, len(groups.settings), (*LEARNING_VALUES, *terms), chosen,
                                   "plot_learning_curves")
    row_texts = groups.titles if df is not None else [f"{st[1]} tasks" for st in groups.settings]
    prefixes, setting = _titles(row_texts, own)
    for row, _ in enumerate(groups.settings):
        in_setting = (g >= 0) & np.isin(g, [i for i, s in enumerate(groups.setting_of) if s == row])
        starts = pd.DataFrame({"c": codes, "t": task, "x": running})[in_setting & (epoch == 1) & (task > 0)]
        bounds = starts.groupby("t")["x"].nunique()
        for col, name in enumerate(values):
            ax = axes[row, col]
            value = epochs[name].to_numpy(dtype=np.float64, na_value=np.nan)
            _draw(ax, _bands(g, running, value), groups, row, scale=100.0 if name == "val_acc_taw" else 1.0,
                  ticks=False)
            if (bounds == 1).all():  # every trial starts each task at the same epoch: ticks there
                edges = starts.groupby("t")["x"].first().to_numpy() - 0.5
                for x in edges:
                    ax.axvline(x, color="0.6", linestyle=":", linewidth=1)
                edges = np.r_[0.5, edges]
                shown = edges[:: max(1, math.ceil(len(edges) / 12))]
                ax.set_xticks(shown, [f"{x - 0.5:g}" for x in shown])
            if name == "lr":
                ax.set_yscale("log")
            text = _LEARNING_TEXT.get(name, f"loss term {name[len(TERM_PREFIX):]}")
            _panel_title(ax, prefixes[row], text)
            ax.set_xlabel("epoch (all tasks in order; ticks at task starts)" if (bounds == 1).all()
                          else "epoch (all tasks in order)")
            ax.set_ylabel(text)
    return _finish(fig, axes, own, "Learning curves", setting)
