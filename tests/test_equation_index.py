"""The equation index (:mod:`stadv_ref.equations`, ``docs/EQUATION_INDEX.md``) against the paper's items.

Resolution only (no test of the index runs another test): every labelled item of
``docs/EQUATIONS.md`` has a registry entry, every code path imports, every named test
exists in its file, every entry has code and a test (or, for a remark, a note), the audit
keys are registered checks, and the rendered page is up to date.
"""
from __future__ import annotations

import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest

from stadv_ref.equations import ITEMS, item, render_index

REPO = Path(__file__).resolve().parents[1]
EQUATIONS = REPO / "docs" / "EQUATIONS.md"
INDEX = REPO / "docs" / "EQUATION_INDEX.md"
KINDS = {"Proposition": "Prop.", "Theorem": "Thm.", "Algorithm": "Alg.", "Section": "Sec."}
NEEDS_CODE_AND_TEST = re.compile(r"(Eq\. \(\d+\)|Prop\. \d+|Thm\. \d+|Alg\. \d+)")
"""Keys that must name code and a test (a note cannot replace them)."""
SHIMS = ("stadv_ref.sdp", "stadv_ref.certification", "stadv_ref.impossibility", "stadv_ref.reproduce",
         "stadv_ref.audit", "stadv_ref.interface")
"""Deprecated re-export modules: the index names the real homes."""

_LABEL = re.compile(
    r"(?P<heading>^#+ .*$)"                                 # "## Experiments (Sections 3.2, 4.2, appendix 6.8)"
    r"|\*\*(?P<bold>.+?)\*\*"                               # "**[1] Bilinear warp**", "**Theorem 1**", "**[E6]**"
    r"|\bEqs?\. (?P<eqs>\(\d+\)(?:\s*(?:,|/|and|-)\s*\(\d+\))*)"  # "Eq. (18)" in running text
    r"|^Figures?:(?P<figs>(?:.+\n?)+?)(?:\n|\Z)",           # "Figures: 2 (...), 3 (...), 5 and 11 (...)"
    re.M,
)


def _bold_labels(text):
    text = text.strip().rstrip(".:")
    if re.match(r"\[\d+\]", text):                           # "[1] Bilinear warp", "[7]/[13]"
        return [f"Eq. ({n})" for n in re.findall(r"\[(\d+)\]", text.split(" ")[0])]
    if text.startswith("[E"):                                # "[E6]"; "[E#]" is the page's placeholder
        return [text] if re.fullmatch(r"\[E\d+\]", text) else []
    m = re.match(r"(Proposition|Theorem|Algorithm|Section)s? (\d+(?:\.\d+)?)$", text)
    return [f"{KINDS[m.group(1)]} {m.group(2)}"] if m else [text]


def equation_labels(text):
    """The labelled items of EQUATIONS.md as registry keys, in page order (each once).

    Labels: bold spans (``**[n] ...**`` -> ``Eq. (n)``, ``**Proposition n**`` -> ``Prop. n``,
    ``**Theorem n**`` -> ``Thm. n``, ``**Algorithm n**`` -> ``Alg. n``, ``**Section n.m**`` ->
    ``Sec. n.m``, ``**[En]**``, any other bold label verbatim), ``Eq. (n)`` in running text,
    section numbers in headings (``Sec. n.m``) and the numbers of the ``Figures:`` list (``Fig. n``).
    """
    found = []
    for m in _LABEL.finditer(text):
        if m.group("heading"):
            new = [f"Sec. {n}" for n in re.findall(r"\b(\d+\.\d+)\b", m.group("heading"))]
        elif m.group("bold"):
            new = _bold_labels(m.group("bold"))
        elif m.group("eqs"):
            new = [f"Eq. ({n})" for n in re.findall(r"\d+", m.group("eqs"))]
        else:
            bare = re.sub(r"\([^()]*\)", " ", m.group("figs"))
            new = [f"Fig. {n}" for n in re.findall(r"\b\d+\b", bare)]
        found += [k for k in new if k not in found]
    return found


def test_label_parser_on_a_sample():
    sample = ("## Possibility (Sections 4.1, appendix 6.7)\n**[1] Bilinear warp** text **[E#]** and **[7]/[13]**,\n"
              "**Proposition 1.** see Eq. (18) and **zero padding**; **Algorithm 2** with **[E3]**.\n"
              "Figures: 2 (a, b), 5 and 11 (c),\n6 (d).\n\nafter 7 (e)\n")
    assert equation_labels(sample) == ["Sec. 4.1", "Sec. 6.7", "Eq. (1)", "Eq. (7)", "Eq. (13)", "Prop. 1",
                                       "Eq. (18)", "zero padding", "Alg. 2", "[E3]", "Fig. 2", "Fig. 5", "Fig. 11",
                                       "Fig. 6"]


def test_every_item_of_equations_md_has_an_entry_and_no_other():
    labels = equation_labels(EQUATIONS.read_text(encoding="utf-8"))
    keys = [it.key for it in ITEMS]
    assert len(set(keys)) == len(keys), "duplicate keys in stadv_ref.equations.ITEMS"
    assert [k for k in labels if k not in keys] == [], "items of docs/EQUATIONS.md with no registry entry"
    assert [k for k in keys if k not in labels] == [], "registry entries that are not items of docs/EQUATIONS.md"
    assert keys == labels, "stadv_ref.equations.ITEMS is not in the order of docs/EQUATIONS.md"
    for n in [f"[E{i}]" for i in range(1, 15)] + ["Eq. (1)", "Prop. 1", "Thm. 1", "Alg. 1"]:
        assert n in keys


def _resolve(path):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:i]).startswith(exc.name):
                raise  # a module that exists but fails to import is an error, not a shorter prefix
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(path)


def test_every_code_path_resolves():
    bad = []
    for it in ITEMS:
        for path in it.code:
            try:
                obj = _resolve(path)
            except (ImportError, AttributeError) as exc:
                bad.append(f"{it.key}: {path} ({type(exc).__name__}: {exc})")
                continue
            if type(obj).__name__ == "module" or not path.startswith("stadv_ref."):
                bad.append(f"{it.key}: {path} is not a function, class or constant of stadv_ref")
            if path.startswith(tuple(s + "." for s in SHIMS)):
                bad.append(f"{it.key}: {path} goes through a deprecated re-export module")
    assert not bad, "code paths in stadv_ref.equations that do not resolve:\n" + "\n".join(bad)


@lru_cache(maxsize=None)
def _test_names(rel):
    """``{"test_x", "TestC::test_y", ...}`` defined in the test file ``rel`` (empty if absent)."""
    path = REPO / rel
    if not path.is_file():
        return frozenset()
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{f.name}" for f in node.body
                         if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return frozenset(names)


def test_every_named_test_exists():
    bad = []
    for it in ITEMS:
        for node_id in it.tests:
            rel, sep, name = node_id.partition("::")
            name = re.sub(r"\[.*\]$", "", name)  # a parametrised id names its function
            ok = sep and rel.startswith("tests/") and name.split("::")[-1].startswith("test_")
            if not (ok and name in _test_names(rel)):
                bad.append(f"{it.key}: {node_id}")
    assert not bad, "tests named in stadv_ref.equations that do not exist (moved or renamed?):\n" + "\n".join(bad)


def test_every_entry_has_code_and_a_test_or_a_note():
    bad = []
    for it in ITEMS:
        if not it.statement or "\n" in it.statement:
            bad.append(f"{it.key}: the statement must be one non-empty line")
        if NEEDS_CODE_AND_TEST.fullmatch(it.key) and not (it.code and it.tests):
            bad.append(f"{it.key}: an equation, proposition, theorem or algorithm needs code and a test")
        elif not (it.code and it.tests) and not it.note:
            bad.append(f"{it.key}: no code or no test, and no note saying why")
    assert not bad, "\n".join(bad)


def test_audit_keys_are_the_registered_checks():
    audit = importlib.import_module("stadv_ref.experiments.audit")
    checks = [key for key, _ in audit.CHECKS]
    assert [(it.key, k) for it in ITEMS for k in it.audit if k not in checks] == [], "unknown audit check keys"
    cited = {k for it in ITEMS for k in it.audit}
    assert [k for k in checks if k not in cited] == [], "audit checks that no item of the index cites"


def test_item_lookup():
    assert item("Eq. (1)").code[0] == "stadv_ref.transform.warp"
    with pytest.raises(KeyError, match="no item"):
        item("Eq. (99)")


def test_rendered_index_is_up_to_date():
    text = render_index()
    assert text.count("\n| ") == len(ITEMS) + 1  # header and one row per item
    assert INDEX.read_text(encoding="utf-8") == text, (
        "docs/EQUATION_INDEX.md is stale: run `python -m stadv_ref.equations > docs/EQUATION_INDEX.md`")


def test_readme_points_at_the_index():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Where each equation lives", 1)[1].split("\n#", 1)[0]
    assert "docs/EQUATION_INDEX.md" in section
