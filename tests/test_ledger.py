"""The reproduction ledger (analysis.ledger): published numbers with their source, held against a run."""

from __future__ import annotations

import os

import pytest
import quickstart_results

from analysis.cli import main
from analysis.errors import ResultsError
from analysis.ledger import against, load_ledger, parse_ledger
from analysis.metrics import trial_metrics
from analysis.summary import summary
from tune.spec import SpecError, load_spec, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "tune", "presets", "quickstart.yaml")
PAPER = os.path.join(ROOT, "tune", "presets", "cifar100_lwf_paper.yaml")
IMAGENET = os.path.join(ROOT, "tune", "presets", "imagenet100_lwf.yaml")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return quickstart_results.write(str(tmp_path_factory.mktemp("quickstart") / "results"))


def test_against_the_quickstart_ledger_says_inside_or_outside_for_every_number(results, capsys) -> None:
    """Each documented number beside the run's mean ± 95% CI; the verdict is the interval's."""
    assert main([results, "--against", QUICKSTART]) == 0
    out = capsys.readouterr().out
    ledger = load_ledger(QUICKSTART)
    table = summary(trial_metrics(__import__("analysis").load(results)), by=["approach"]).set_index("approach")
    for entry in ledger:
        for approach, published in entry.values.items():
            mean, ci = table.loc[approach, f"{entry.metric}_mean"], table.loc[approach, f"{entry.metric}_ci95"]
            verdict = "inside" if mean - ci <= published <= mean + ci else "**outside**"
            line = (f"| {entry.metric} | approach={approach} | {100 * published:.1f} | {100 * mean:.1f} ± "
                    f"{100 * ci:.1f} | 3 | {verdict} |")
            assert line in out, line
    assert "docs/getting-started.md" in out  # the source is printed


def test_a_published_group_without_trials_is_said_so(results) -> None:
    [entry], _ = parse_ledger([{"source": "s", "where": "w", "protocol": "p", "metric": "final_acc_tag",
                                "by": "approach", "values": {"lwf": 0.5, "icarl": 0.6}}])
    rows = against(trial_metrics(__import__("analysis").load(results)), [entry])
    assert list(rows["approach"]) == ["lwf", "icarl"] and list(rows["n_seeds"]) == [3, 0]
    assert rows["inside"].iloc[1] is None


def test_the_paper_ledger_names_its_source_and_the_preset_validates() -> None:
    entries = load_ledger(PAPER)
    assert {e.metric for e in entries} == {"final_acc_tag", "final_acc_taw"}
    assert all("NeXAIS/RethinkSoftmax" in e.source and "55bb8de" in e.source for e in entries)
    assert entries[0].values["lwf"] == 0.165 and entries[1].values["lwf-bsr"] == 0.736
    assert load_spec(PAPER).num_trials == 18 and load_spec(QUICKSTART).num_trials == 24


def test_the_imagenet_ledger_holds_table_a2_for_every_preset_approach() -> None:
    """Every approach the ImageNet-100 preset sweeps has a published Ā and F̄ to be held against."""
    entries = load_ledger(IMAGENET)
    assert [e.metric for e in entries] == ["paper_avg_acc_taw", "paper_avg_forg_taw"]
    assert all("Table A.2" in e.source and "55bb8de" in e.source for e in entries)
    swept = set(load_spec(IMAGENET).grid["approach"])
    assert all(set(e.values) == swept for e in entries)


def test_a_bad_ledger_is_an_error_naming_the_entry(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"reproduces\[0\]\.metric = 'top1' is not valid: choose one of final_acc_tag"):
        parse_spec({"base": {"approach": "lwf"}, "reproduces": [{"source": "s", "where": "w", "protocol": "p",
                                                                   "metric": "top1", "by": "approach",
                                                                   "values": {"lwf": 0.1}}]})
    path = tmp_path / "no_ledger.yaml"
    path.write_text("base: {approach: lwf}\n")
    with pytest.raises(ResultsError, match="has no reproduces: section"):
        load_ledger(str(path))


def test_a_preset_is_named_as_tune_sweep_names_it_and_a_wrong_name_gets_the_closest(results) -> None:
    """The notebook and --against name a preset wherever the project is installed (no repository path)."""
    from analysis.cli import preset_or_file

    assert load_ledger(preset_or_file("quickstart")) == load_ledger(QUICKSTART)
    with pytest.raises(ResultsError, match="quickstart"):
        preset_or_file("quickstrat")
