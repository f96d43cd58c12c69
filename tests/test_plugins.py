"""Plugin discovery through real entry points of fake distributions put on sys.path."""

import sys
import textwrap
import warnings

import pytest

import interpkit
from interpkit import plugins
from interpkit.plugins import PluginWarning

GOOD = """
    import interpkit
    from interpkit.explainers.gradcam import GradCAM

    class ShiftedCAM(GradCAM):
        name = "shifted_cam"

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register("shifted_cam", ShiftedCAM)

    @interpkit.hookimpl
    def interpkit_register_metrics(register):
        register("always_one", lambda explanation: 1.0)
"""
RAISES = """
    import interpkit

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register("half_registered", object)
        raise RuntimeError("registration exploded")
"""
TAKEN = """
    import interpkit

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register("gradcam", object)
"""


def _distribution(root, name, module, source):
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[interpkit]\n{module} = {module}\n")


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    _distribution(tmp_path, "good-plugin", "good_plugin_mod", GOOD)
    _distribution(tmp_path, "import-broken", "broken_plugin_mod", "import not_a_real_module_xyz\n")
    _distribution(tmp_path, "raising-plugin", "raising_plugin_mod", RAISES)
    _distribution(tmp_path, "name-thief", "thief_plugin_mod", TAKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in ("good_plugin_mod", "broken_plugin_mod", "raising_plugin_mod", "thief_plugin_mod"):
        sys.modules.pop(module, None)
    plugins._registry = None  # rebuilt lazily once the fake distributions are off sys.path


def test_broken_plugins_are_isolated(fake_plugins):
    with pytest.warns(PluginWarning) as caught:
        registry = plugins.reload()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert any("import-broken 1.0" in m and "ModuleNotFoundError" in m for m in messages)
    assert any("raising-plugin 1.0" in m and "registration exploded" in m for m in messages)
    assert any("name-thief 1.0" in m and "'gradcam' is already registered" in m for m in messages)
    names = set(interpkit.list_explainers())
    assert set(interpkit.explainers.BUILTIN_EXPLAINERS) | {"shifted_cam"} <= names
    assert "half_registered" not in names
    assert registry.entries["metrics"]["always_one"](None) == 1.0
    assert "half_registered" not in registry.entries["explainers"]  # all or nothing per plugin
    assert interpkit.get_explainer("gradcam") is interpkit.GradCAM
    assert len(registry.failures) == 3


def test_plugin_explainer_is_importable_and_usable(fake_plugins, small_cnn, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        plugins.reload()
    from interpkit import ShiftedCAM  # resolved through the registry

    explanation = interpkit.explain(small_cnn, images, method="shifted_cam", target=1)
    assert isinstance(interpkit.get_explainer("shifted_cam")(small_cnn), ShiftedCAM)
    assert explanation.maps.shape == (4, 1, 32, 32)


def test_autoload_can_be_disabled(fake_plugins, monkeypatch):
    monkeypatch.setenv("INTERPKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        plugins.reload()
    assert interpkit.list_explainers() == sorted(interpkit.explainers.BUILTIN_EXPLAINERS)


def test_unknown_names():
    with pytest.raises(interpkit.PluginError, match="registered explainers: .*gradcam"):
        interpkit.get_explainer("gradkam")
    with pytest.raises(AttributeError):
        interpkit.NoSuchExplainer  # noqa: B018


def test_register_rejects_non_snake_case_names():
    registry = plugins.Registry()
    register = plugins._stager("explainers", {}, registry, "test")
    with pytest.raises(interpkit.PluginError, match="snake_case"):
        register("GradCam", object)
