"""The documentation site: it builds with ``mkdocs build --strict`` (no broken link, anchor or page), its
config reference covers every key from the code, and the README stays a short front page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cil.config import valid_keys

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "reference.py"
QUICKSTART = [
    "python3.11 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e .",
    "python -m tune sweep tune/presets/quickstart.yaml",
    'python -m pytest -m "not slow" -q',
]


def _hook():
    spec = importlib.util.spec_from_file_location("cil_docs_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_the_site_builds_strict(site) -> None:
    for page in ("index.html", "reference/index.html", "approaches/index.html", "results-schema/index.html"):
        assert (site / page).is_file(), page


def test_every_config_key_is_in_the_generated_reference(site) -> None:
    html = (site / "reference" / "index.html").read_text()
    missing = [key for key in valid_keys() if f'id="{key}"' not in html]
    assert not missing, f"keys missing from the config reference: {missing}"
    assert "cil:config-reference" not in html  # the marker was replaced


def test_every_config_key_has_an_attribute_docstring() -> None:
    docs = _hook().key_docs()
    assert [d.key for d in docs] == valid_keys()  # every key, in declaration order
    missing = [d.key for d in docs if not d.doc]
    assert not missing, ("config keys without an attribute docstring (a string literal on the line after the "
                         f"field, in cil/config/schema.py or cil/approaches/registry.py): {missing}")


def test_the_reference_reads_types_defaults_checks_and_flags_from_the_code() -> None:
    docs = {d.key: d for d in _hook().key_docs()}
    assert docs["lucir.K"].type == "int" and docs["lucir.K"].default == "`2`" and docs["lucir.K"].valid == "≥ 1"
    assert docs["lucir.less_forget"].flags == ("`--remove-less-forget` (stores `false`)",)
    assert docs["ewc.fi_sampling_type"].valid == "`max_pred`, `true`, `multinomial`"
    assert docs["loss.lamb"].type == "float or null" and docs["loss.lamb"].flags == ("`--lamb`",)
    assert docs["data.augment"].valid == "`facil`, `crop`, `none`"
    assert docs["gridsearch.lr_first"].default == "`[0.5, 0.1, 0.05]`"
    assert docs["train.fix_bn"].flags == ("`--fix-bn`",)
    assert docs["train.lr"].valid == "> 0" and docs["train.momentum"].valid == "in [0, 1)"  # shared keys too
    assert docs["loss.w_task"].doc.startswith("Weight of `kd_task`")  # a generated field's doc metadata


def test_unknown_markers_fail_the_build() -> None:
    hook = _hook()
    assert "| `lwf-s` | 1 | 2 | 0 | 1 | 0 | 0 |" in hook.render("<!-- cil:loss-presets lwf -->")
    with pytest.raises(ValueError, match="unknown docs marker cil:nope"):
        hook.render("<!-- cil:nope -->")
    with pytest.raises(ValueError, match="no approach section 'lwf'"):
        hook.render("<!-- cil:section-keys lwf -->")


def test_no_config_key_is_documented_by_hand_in_a_table() -> None:
    """Key tables are generated: a Markdown table row that starts with a config key was written by hand."""
    keys = {key for key in valid_keys() if "." in key}  # `approach` is also a Parquet column of its own
    rows = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"\|\s*`([\w.]+)`", line)
            if match and match.group(1) in keys:
                rows.append(f"{path.relative_to(ROOT)}:{n}: {line[:80]}")
    assert not rows, "hand-written key tables (the reference is generated from the code):\n" + "\n".join(rows)


def test_the_readme_is_a_short_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for command in QUICKSTART:  # the set-up and test commands, as CI (.ci/run) runs them
        assert any(line.startswith(command + " ") for line in text.splitlines()), command
    # CI installs exactly the README's way: the lock and the project itself (importable from anywhere).
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip().startswith("pip install")]
    assert ci == [QUICKSTART[0].split(" && ")[-1]]
    assert "docs/img/quickstart-accuracy.png" in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_code_blocks_wrap_or_scroll(site) -> None:
    """Commands wrap at the page's edge (a trailing comment stays in view) and output scrolls: the
    stylesheet is on every page and the blocks carry the language class and line spans it selects."""
    css = (site / "stylesheets" / "extra.css").read_text()
    assert "pre-wrap" in css and 'code > span[id^="__span"]' in css
    page = (site / "getting-started" / "index.html").read_text()
    assert "stylesheets/extra.css" in page
    assert '<div class="language-bash highlight"><pre><span></span><code><span id="__span-0-1">' in page
