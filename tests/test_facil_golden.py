"""Golden values from FACIL's own code: every approach's loss terms, gradients, end-of-task effects and
predictions equal FACIL's on the same inputs, within fp32 rounding (no FACIL checkout needed).

``tests/data/facil_golden.pt`` holds the numbers FACIL computed on the scene ``tests/facil_scene.py``
builds from fixed seeds; its header names FACIL's commit and the command that wrote it
(``python tools/facil_diff.py --facil <FACIL checkout> --write tests/data/facil_golden.pt``). The
variants that differ from FACIL on purpose (``facil_scene.DELIBERATE``) are not in it: their FACIL keys
are (e.g. ``lwm`` is LwM with ``lwm.facil_attention`` and ``lwm.facil_fix_bn``).
"""

from __future__ import annotations

from pathlib import Path

import facil_scene
import pytest
import torch

GOLDEN = torch.load(Path(__file__).parent / "data" / "facil_golden.pt", weights_only=True)


def test_the_golden_values_cover_every_facil_approach():
    names = {facil_scene.approach_of(v) for v in GOLDEN["facil"]}
    assert names == {"finetuning", "freezing", "joint", "lwf", "icarl", "eeil", "bic", "lucir", "il2m", "dmc",
                     "ewc", "mas", "path_integral", "r_walk", "lwm"}
    assert set(GOLDEN["facil"]) == set(facil_scene.APPROACHES) - set(facil_scene.DELIBERATE)
    assert len(GOLDEN["header"]["facil_commit"]) == 40


@pytest.mark.parametrize("variant", sorted(GOLDEN["facil"]))
def test_equals_facil(variant):
    theirs = GOLDEN["facil"][variant]
    rows = facil_scene.differences(theirs, facil_scene.ours(variant))
    assert {q for q, *_ in rows} >= {"loss/total", "grads"}
    bad = [f"{q}: scale {s:.3g}, max abs diff {d:.3g}, rel {r:.3g}" for q, s, d, r, ok in rows if not ok]
    assert not bad, f"{variant} differs from FACIL {GOLDEN['header']['facil_commit'][:7]}:\n" + "\n".join(bad)


def test_the_check_detects_a_changed_term():
    """The comparison is not vacuous: LwF's distillation at another temperature is caught."""
    theirs = GOLDEN["facil"]["lwf"]
    mine = facil_scene.ours("lwf")
    mine["loss"]["kd_joint"] = mine["loss"]["kd_joint"] * (1 + 1e-3)
    bad = {q for q, *_, ok in facil_scene.differences(theirs, mine) if not ok}
    assert bad == {"loss/kd_joint"}
