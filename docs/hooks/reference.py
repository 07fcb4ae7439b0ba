"""MkDocs hook: the blocks of the docs that restate the code, rendered from the code.

A page asks for a block with a marker line, ``<!-- cil:NAME ARGUMENT -->``:

- ``config-reference``: every dotted config key (``cil.config.valid_keys()``), section by section, with its
  type, default, valid values, FACIL flag and description. Descriptions are the *attribute docstrings* of
  the config dataclasses (``cil/config.py``) and the approach sections (``cil/approaches/registry.py``): the
  string literal on the line after each field. Valid values come from a field's ``check`` metadata (or the
  config's tuples of names), flags from its ``flag`` metadata and ``cil.cli``'s flag tables.
- ``approaches``: one row per ``ApproachSpec``: what it is, its keys, exemplars, selection, grid-search knob.
- ``loss-presets NAME``: the ``loss.*`` values of approach ``NAME`` and its variants (``NAME-*``).
- ``section-keys NAME``: one line listing approach section ``NAME``'s keys with their defaults and flags.
- ``stability``: each approach's stability knob and the value FACIL's grid search starts it from.

A key without a docstring is logged as a warning, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import logging
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cil import cli  # noqa: E402  (the repository root goes on sys.path first)
from cil import config as cfg  # noqa: E402
from cil.approaches import registry  # noqa: E402

log = logging.getLogger("mkdocs.hooks.cil_reference")

REFERENCE_PAGE = "reference.md"
MARKER = re.compile(r"^<!-- cil:([a-z-]+)(?: ([\w-]+))? -->$", re.M)
# Range checks of the ``check`` metadata, in words.
CHECKS = {">=0": "≥ 0", ">0": "> 0", ">=1": "≥ 1", "[0,1]": "in [0, 1]", "-1|>=0": "-1, or ≥ 0"}
# Keys whose valid names are tuples of cil.config rather than field metadata.
CHOICES = {"data.dataset": cfg.DATASETS, "model.network": cfg.NETWORKS, "data.augment": cfg.AUGMENT_MODES,
           "memory.selection": cfg.SELECTIONS, "run.cpu_isa": cfg.CPU_ISA_MODES}
# Flags that cil.cli declares outside its FLAGS and SWITCHES tables.
OTHER_FLAGS = {"data.dataset": "--datasets", "run.device": "--gpu N"}


@dataclass(frozen=True)
class KeyDoc:
    """One dotted key as the reference shows it."""

    key: str
    section: str
    type: str
    default: str
    valid: str
    flags: tuple[str, ...]
    doc: str


# ---- reading the code -----------------------------------------------------------------------------------

@functools.cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """Field name -> the string literal on the line after the field in ``cls``'s source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def owner(section: str) -> type:
    """The dataclass that declares a section's fields (an approach section's own class, not the config's
    all-optional view of it); ``""`` is the top level."""
    if section in registry.SECTIONS:
        return registry.SECTIONS[section]
    if not section:
        return cfg._CoreConfig
    return typing.get_type_hints(cfg._CoreConfig)[section]


def type_text(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_text(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    if typing.get_origin(tp) is list:
        return f"list of {type_text(args[0])}"
    return getattr(tp, "__name__", str(tp))


def value_text(value: Any) -> str:
    """A value as YAML spells it."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    if isinstance(value, list):
        return "`[" + ", ".join(number_text(v) for v in value) + "]`"
    return f"`{number_text(value)}`"


def number_text(value: Any) -> str:
    """Floats without a trailing ``.0`` (``5000``, ``0.0001``), as FACIL's help prints them."""
    return format(value, "g") if isinstance(value, float) else str(value)


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return value_text(f.default)
    factory = f.default_factory
    if getattr(factory, "__name__", "<lambda>") == "<lambda>":
        return value_text(factory())
    summary = first_sentence(inspect.getdoc(factory) or "")
    return f"`{factory.__name__}()`" + (f": {summary}" if summary else "")


def first_sentence(text: str) -> str:
    return markdown_of(text.split("\n\n")[0])


def markdown_of(docstring: str) -> str:
    """A docstring's reST roles and double backticks as Markdown code spans, on one line."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", docstring)
    return " ".join(text.replace("``", "`").split())


def valid_text(key: str, f: dataclasses.Field) -> str:
    check = f.metadata.get("check")
    if key == "approach":
        return "an approach name (see [Approaches](approaches.md#every-approach))"
    if isinstance(check, tuple) or key in CHOICES:
        return ", ".join(f"`{v}`" for v in (check if isinstance(check, tuple) else CHOICES[key]))
    if callable(check):
        return first_sentence(inspect.getdoc(check) or check.__name__)
    return CHECKS.get(check, "" if check is None else str(check))


def flag_table() -> dict[str, list[str]]:
    """Dotted key -> the FACIL flags of ``python -m cil`` that set it."""
    out: dict[str, list[str]] = {}
    for flag, (key, _) in cli.FLAGS.items():
        out.setdefault(key, []).append(f"`{flag}`")
    for flag, key in cli.SWITCHES.items():
        out.setdefault(key, []).append(f"`{flag}`")
    for key, flag in OTHER_FLAGS.items():
        out.setdefault(key, []).append(f"`{flag}`")
    for flag, by_section in registry.section_flags().items():
        for sf in by_section.values():
            stores = "" if sf.sets is None else f" (stores {value_text(sf.sets)})"
            out.setdefault(sf.key, []).append(f"`{flag}`{stores}")
    return out


@functools.cache
def key_docs() -> tuple[KeyDoc, ...]:
    """Every dotted config key, in declaration order (read once per build)."""
    flags = flag_table()
    out = []
    for key in cfg.valid_keys():
        section, _, leaf = key.rpartition(".")
        cls = owner(section)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        f, hints, docs = fields[leaf], typing.get_type_hints(cls), attribute_docstrings(cls)
        out.append(KeyDoc(key=key, section=section, type=type_text(hints[leaf]), default=default_text(f),
                          valid=valid_text(key, f), flags=tuple(flags.get(key, ())), doc=docs.get(leaf, "")))
    return tuple(out)


# ---- rendering ------------------------------------------------------------------------------------------

def cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def key_link(key: str, page: str = REFERENCE_PAGE) -> str:
    return f"[`{key}`]({page}#{key})"


def section_heading(section: str) -> str:
    if not section:
        return "## Top level {#top-level}\n"
    return f"## `{section}` {{#{section}}}\n"


def derived_default(key: str) -> str:
    """Defaults that depend on other keys, from the code's own tables."""
    if key == "model.network":
        by_net: dict[str, list[str]] = {}
        for dataset, net in cfg.DEFAULT_NETWORKS.items():
            by_net.setdefault(net, []).append(f"`{dataset}`")
        return " Null resolves to " + "; ".join(f"`{n}` for {', '.join(d)}" for n, d in by_net.items()) + "."
    return ""


def render_reference() -> str:
    docs = key_docs()
    missing = [d.key for d in docs if not d.doc]
    if missing:
        log.warning("config keys without an attribute docstring (add one after the field): %s", ", ".join(missing))
    out: list[str] = []
    for section in dict.fromkeys(d.section for d in docs):
        out.append(section_heading(section))
        intro = first_sentence(inspect.getdoc(owner(section)) or "") if section else ""
        if intro:
            out.append(intro + "\n")
        if section in registry.SECTIONS:
            users = ", ".join(f"`{u}`" for u in registry.section_users(section))
            out.append(f"Used by {users}; null for every other approach.\n")
        out.append("| key | type | default | valid values | FACIL flag | description |")
        out.append("|-----|------|---------|--------------|------------|-------------|")
        for d in (d for d in docs if d.section == section):
            anchor = f'<span id="{d.key}"></span>`{d.key}`'
            doc = d.doc + derived_default(d.key)
            out.append(f"| {anchor} | {cell(d.type)} | {cell(d.default)} | {cell(d.valid)} | "
                       f"{cell(', '.join(d.flags))} | {cell(doc)} |")
        out.append("")
    return "\n".join(out)


def family(name: str) -> list[registry.ApproachSpec]:
    specs = [s for s in registry.SPECS.values() if s.name == name or s.name.startswith(name + "-")]
    if not specs:
        raise ValueError(f"no approach named {name!r} or {name}-*")
    return specs


def render_loss_presets(name: str) -> str:
    specs = family(name)
    keys = [k for k in registry.LOSS_PRESET_KEYS if any(k in s.loss for s in specs)]
    out = ["| approach | " + " | ".join(f"`loss.{k}`" for k in keys) + " | what it is |",
           "|---|" + "---|" * len(keys) + "---|"]
    for s in specs:
        values = " | ".join(f"{s.loss[k]:g}" if k in s.loss else "—" for k in keys)
        out.append(f"| `{s.name}` | {values} | {cell(s.doc)} |")
    return "\n".join(out) + "\n"


def render_section_keys(section: str) -> str:
    if section not in registry.SECTIONS:
        raise ValueError(f"no approach section {section!r}; sections: {', '.join(registry.SECTIONS)}")
    parts = []
    for d in key_docs():
        if d.section == section:
            flags = f" ({', '.join(d.flags)})" if d.flags else ""
            parts.append(f"{key_link(d.key)} {d.default}{flags}")
    return "**Keys** (default, FACIL flag): " + "; ".join(parts) + ".\n"


def loss_keys_text(preset: typing.Mapping[str, float]) -> str:
    """The ``loss.*`` keys an approach's preset fills ("" for a baseline, whose preset records zeros)."""
    if not any(preset.get(k) for k in ("lamb", *registry.LOSS_WEIGHT_NAMES)):
        return ""
    links = [key_link(f"loss.{k}") for k in ("lamb", "T") if k in preset]
    if any(k in preset for k in registry.LOSS_WEIGHT_NAMES):
        links.append("the `loss.w_*` of its preset")
    return ", ".join(links)


def render_approaches() -> str:
    out = ["| approach | what it is | its keys | exemplars | `memory.selection` unset | grid-search knob |",
           "|---|---|---|---|---|---|"]
    for s in registry.SPECS.values():
        section = f"[`{s.section}.*`]({REFERENCE_PAGE}#{s.section})" if s.section else ""
        keys = ", ".join(filter(None, [section, loss_keys_text(s.loss)]))
        knob = f"{key_link(s.stability.key)} from {s.stability.start:g}" if s.stability else ""
        out.append(f"| `{s.name}` | {cell(s.doc)} | {cell(keys)} | {'required' if s.needs_exemplars else '—'} | "
                   f"`{s.selection}` | {cell(knob)} |")
    return "\n".join(out) + "\n"


def render_stability() -> str:
    groups: dict[tuple[str, float], list[str]] = {}
    without = []
    for s in registry.SPECS.values():
        if s.stability is None:
            without.append(f"`{s.name}`")
        else:
            groups.setdefault((s.stability.key, s.stability.start), []).append(f"`{s.name}`")
    out = ["| approaches | knob | FACIL's first value |", "|---|---|---|"]
    out += [f"| {', '.join(names)} | {key_link(key)} | {start:g} |" for (key, start), names in groups.items()]
    return "\n".join(out) + f"\n\nNo knob (the search picks the lr only): {', '.join(without)}.\n"


RENDERERS = {"config-reference": lambda arg: render_reference(), "approaches": lambda arg: render_approaches(),
             "loss-presets": render_loss_presets, "section-keys": render_section_keys,
             "stability": lambda arg: render_stability()}


def render(markdown: str) -> str:
    """Every marker of a page replaced by its block."""
    def block(match: re.Match) -> str:
        name, arg = match.group(1), match.group(2)
        if name not in RENDERERS:
            raise ValueError(f"unknown docs marker cil:{name}; known: {', '.join(RENDERERS)}")
        return RENDERERS[name](arg)

    return MARKER.sub(block, markdown)


def on_pre_build(config: Any) -> None:
    """MkDocs event: the code is read once per build, not once per page."""
    attribute_docstrings.cache_clear()
    key_docs.cache_clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the page's generated blocks."""
    try:
        return render(markdown)
    except ValueError as err:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {err}") from err
