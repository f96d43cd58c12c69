"""Every Python example in docs/ runs, and the documentation figures can be regenerated."""

import re
import runpy
import sys
from pathlib import Path

import pytest
from tiny_split import tiny_caltech5, with_fewer_forwards

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if re.search(r"```python\n", p.read_text()))


# Every block must run verbatim on its own, as a reader copies it; a block preceded by
# <!-- file: PATH --> is also written to PATH (under a src/ folder on sys.path) first, as the page asks.
BLOCK = re.compile(r"(?:<!-- file: (\S+) -->\n)?```python\n(.*?)```", re.S)


def _call_tests(namespace):
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p.name == "report.md" else p
                                  for p in PAGES], ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    """Each block runs alone, in a fresh namespace; its test_* functions are called. The report's
    example reads a few images per class of the split: the whole split's report runs in
    tests/report, and running it twice would double the suite's longest part."""
    if page.name == "report.md":
        import interpkit.data.datasets

        tiny = tiny_caltech5(tmp_path / "tiny_split")
        monkeypatch.setattr(interpkit.data.datasets, "bundled_root", lambda: tiny)
        with_fewer_forwards(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    blocks = BLOCK.findall(page.read_text())
    for path, block in blocks:
        if path:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(block)
    for _, block in blocks:
        namespace = {"__name__": f"docs_{page.stem}"}
        exec(compile(block, str(page), "exec"), namespace)
        _call_tests(namespace)
    for module in [m for m in sys.modules if m.startswith("interpkit_edge_cam")]:
        del sys.modules[module]


def test_readme_examples_run_each_on_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS.parent / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_formulas_become_mathml_and_code_stays_verbatim():
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        from mathml import on_page_markdown
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    text = "Cost $\\alpha_c$ here.\n\n$$\\frac{1}{hw}$$\n\n`a $b$ c`\n\n```python\nx = '$y$'\n```\n"
    converted = on_page_markdown(text)
    assert converted.count("<math") == 2 and 'display="block"' in converted
    assert "`a $b$ c`" in converted and "x = '$y$'" in converted
    for page in DOCS.rglob("*.md"):  # no page keeps TeX the browser would show raw
        outside_code = re.sub(r"```.*?```|`[^`\n]+`", "", on_page_markdown(page.read_text()), flags=re.S)
        assert "$$" not in outside_code and not re.search(r"\$\\[a-z]", outside_code), page
        # an inline formula opening a line becomes <math> there, which Markdown reads as an HTML block: the
        # paragraph breaks around it
        assert not re.search(r"^<math(?![^>]*display=\"block\")", outside_code, re.M), page


def test_pages_with_examples_are_found():
    names = {p.name for p in PAGES}
    assert {"index.md", "gradcam.md", "patches.md", "writing-a-plugin.md", "testing.md"} <= names


def test_figures_script(tmp_path):
    script = DOCS / "scripts" / "make_figures.py"
    module = runpy.run_path(str(script), run_name="figures")
    written = module["main"](tmp_path)
    screenshots = set(p.name for p in (DOCS / "images").glob("viewer-*.png"))  # taken by tests/viewer in chromium
    assert {p.name for p in written} == {p.name for p in (DOCS / "images").glob("*.png")} - screenshots
    assert all(p.stat().st_size > 1000 for p in written)


def test_every_public_name_has_a_docstring():
    import importlib
    import inspect

    missing = []
    for module_name in ("interpkit", "interpkit.core", "interpkit.analysis", "interpkit.explainers", "interpkit.zoo",
                        "interpkit.data", "interpkit.train", "interpkit.viz", "interpkit.testing", "interpkit.errors",
                        "interpkit.report", "interpkit.registry"):
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            members = [(name, obj)]
            if inspect.isclass(obj):
                members += [(f"{name}.{n}", v) for n, v in vars(obj).items() if not n.startswith("_")
                            and (inspect.isfunction(v) or isinstance(v, property))]
            missing += [f"{module_name}.{n}" for n, v in members
                        if (inspect.isclass(v) or inspect.isfunction(v) or isinstance(v, property))
                        and not (v.__doc__ or "").strip()]
    assert not missing, missing
