"""Every Python example in docs/ runs, and the documentation figures can be regenerated."""

import re
import runpy
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if re.search(r"```python\n", p.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    """A page's blocks run in order in one namespace; functions named test_* are then called."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        exec(compile(block, str(page), "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()


def test_pages_with_examples_are_found():
    names = {p.name for p in PAGES}
    assert {"index.md", "gradcam.md", "patches.md", "writing-a-plugin.md", "testing.md"} <= names


def test_figures_script(tmp_path):
    script = DOCS / "scripts" / "make_figures.py"
    module = runpy.run_path(str(script), run_name="figures")
    written = module["main"](tmp_path)
    assert {p.name for p in written} == {p.name for p in (DOCS / "images").glob("*.png")}
    assert all(p.stat().st_size > 1000 for p in written)


def test_every_public_name_has_a_docstring():
    import importlib
    import inspect

    missing = []
    for module_name in ("interpkit", "interpkit.core", "interpkit.zoo", "interpkit.data", "interpkit.train",
                        "interpkit.viz", "interpkit.testing", "interpkit.errors", "interpkit.report"):
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
