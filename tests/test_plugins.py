"""Plugin discovery through real entry points of fake distributions put on sys.path."""

import subprocess
import sys
import textwrap
import warnings

import pytest

import interpkit
from interpkit import registry as registry_module
from interpkit.errors import PluginWarning

GOOD = """
    import interpkit
    from interpkit import GradCAM

    class ShiftedCAM(GradCAM):
        name = "shifted_cam"

    class AlwaysOne:
        name = "always_one"

        def __call__(self, explanation):
            return 1.0

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register(ShiftedCAM)

    @interpkit.hookimpl
    def interpkit_register_metrics(register):
        register(AlwaysOne())
"""
RAISES = """
    import interpkit
    from interpkit import GradCAM

    class Half(GradCAM):
        name = "half_registered"

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register(Half)
        raise RuntimeError("registration exploded")
"""
TAKEN = """
    import interpkit
    from interpkit import GradCAM

    class Thief(GradCAM):
        name = "gradcam"

    @interpkit.hookimpl
    def interpkit_register_explainers(register):
        register(Thief)
"""
EXITS = """
    import sys
    sys.exit(3)
"""
WRONG_KINDS = {
    "int-plugin": ("explainers", "42"),
    "lambda-plugin": ("explainers", "lambda model: model"),
    "dict-plugin": ("explainers", "dict"),
    "class-model-plugin": ("models", "object"),
    "builder-without-weights": ("models", "lambda: None"),
}


def _distribution(root, name, module, source):
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[interpkit]\n{module} = {module}\n")


def _wrong_kind(kind, expression):
    return f"""
    import interpkit

    @interpkit.hookimpl
    def interpkit_register_{kind}(register):
        register({expression})
"""


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    modules = {"good-plugin": ("good_plugin_mod", GOOD), "import-broken": ("broken_plugin_mod", "import nope_xyz\n"),
               "raising-plugin": ("raising_plugin_mod", RAISES), "name-thief": ("thief_plugin_mod", TAKEN),
               "exiting-plugin": ("exiting_plugin_mod", EXITS)}
    for name, (kind, expression) in WRONG_KINDS.items():
        modules[name] = (name.replace("-", "_") + "_mod", _wrong_kind(kind, expression))
    for name, (module, source) in modules.items():
        _distribution(tmp_path, name, module, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module, _ in modules.values():
        sys.modules.pop(module, None)
    registry_module._registry = None  # rebuilt lazily once the fake distributions are off sys.path


def _builtin_explainers():
    sources = registry_module.registry().sources["explainers"]
    return sorted(name for name, source in sources.items() if "built-in" in source)


def test_broken_plugins_are_isolated(fake_plugins):
    with pytest.warns(PluginWarning) as caught:
        registry = registry_module.reload()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4 + len(WRONG_KINDS)
    assert any("import-broken 1.0" in m and "ModuleNotFoundError" in m for m in messages)
    assert any("raising-plugin 1.0" in m and "registration exploded" in m for m in messages)
    assert any("name-thief 1.0" in m and "'gradcam' is already registered" in m for m in messages)
    assert any("exiting-plugin 1.0" in m and "SystemExit" in m for m in messages)
    for name, (kind, _) in WRONG_KINDS.items():
        expected = "Explainer subclass" if kind == "explainers" else "model builder"
        assert any(f"{name} 1.0" in m and expected in m for m in messages), name
    names = set(interpkit.list_explainers())
    assert {"gradcam", "guided_backprop", "shifted_cam"} <= names
    assert "half_registered" not in names  # all or nothing per plugin
    assert registry.entries["metrics"]["always_one"](None) == 1.0
    assert "always_one" in interpkit.list_metrics() and "deletion" in interpkit.list_metrics()
    assert interpkit.get_explainer("gradcam") is interpkit.GradCAM
    assert len(registry.failures) == 4 + len(WRONG_KINDS)


def test_a_plugin_calling_sys_exit_does_not_end_the_command_line(fake_plugins, tmp_path):
    result = subprocess.run([sys.executable, "-m", "interpkit", "plugins"], capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exiting-plugin 1.0" in result.stdout and "SystemExit" in result.stdout


def test_plugin_explainer_is_importable_and_usable(fake_plugins, small_cnn, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        registry_module.reload()
    from interpkit import ShiftedCAM  # resolved through the registry

    explanation = interpkit.explain(small_cnn, images, method="shifted_cam", target=1)
    assert isinstance(interpkit.get_explainer("shifted_cam")(small_cnn), ShiftedCAM)
    assert explanation.maps.shape == (4, 1, 32, 32)


def test_autoload_can_be_disabled(fake_plugins, monkeypatch):
    monkeypatch.setenv("INTERPKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        registry_module.reload()
    assert interpkit.list_explainers() == ["deconvnet", "deeplift", "deeplift_shap", "feature_ablation", "gradcam",
                                           "gradient_shap", "guided_backprop", "guided_gradcam", "input_x_gradient",
                                           "kernel_shap", "lime", "lrp", "max_activating_patches", "occlusion",
                                           "rise", "saliency", "shapley_value_sampling"]
    assert interpkit.list_explainers() == _builtin_explainers()


def test_unknown_names_suggest_close_ones():
    with pytest.raises(interpkit.PluginError, match="did you mean 'gradcam'.*registered explainers: .*gradcam"):
        interpkit.get_explainer("gradkam")
    with pytest.raises(interpkit.PluginError, match="caltech5_arch1"):
        interpkit.get_model("caltech5_arch9")
    with pytest.raises(AttributeError):
        interpkit.NoSuchExplainer  # noqa: B018


def test_register_reads_the_name_and_rejects_bad_names():
    registry = registry_module.Registry()
    staged = {}
    register = registry_module._stager("explainers", staged, registry, "test")
    register(interpkit.GradCAM)
    assert staged == {"gradcam": interpkit.GradCAM}

    class Shouting(interpkit.GradCAM):
        name = "GradCam"

    with pytest.raises(interpkit.PluginError, match="snake_case"):
        register(Shouting)
    with pytest.raises(interpkit.PluginError, match="already registered"):
        register(interpkit.GradCAM)


def test_register_plugin_in_a_running_process(monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", None)

    class Metric:
        name = "constant_metric"

        def __call__(self, explanation):
            return 0.0

    class Good:
        @interpkit.hookimpl
        def interpkit_register_metrics(self, register):
            register(Metric())

    class Bad:
        @interpkit.hookimpl
        def interpkit_register_explainers(self, register):
            register(42)

    registry_module.register_plugin(Good(), "good")
    assert interpkit.get_metric("constant_metric")(None) == 0.0
    with pytest.raises(interpkit.PluginError, match="plugin bad raised while registering.*Explainer subclass"):
        registry_module.register_plugin(Bad(), "bad")
    assert registry_module.registry().failures == []
    monkeypatch.setattr(registry_module, "_registry", None)


def test_two_plugins_registered_with_the_default_source_and_a_misspelt_hook(monkeypatch):
    """Both plugins took the pluggy name "registered in this process": the second was refused. A
    hook named ``interpkit_register_explainer`` registered nothing and said nothing."""
    monkeypatch.setattr(registry_module, "_registry", None)

    def plugin(name):
        explainer = type(f"Saliency_{name}", (interpkit.Saliency,), {"name": name})

        class Plugin:
            @interpkit.hookimpl
            def interpkit_register_explainers(self, register):
                register(explainer)

        return Plugin()

    registry_module.register_plugin(plugin("saliency_a"))
    registry_module.register_plugin(plugin("saliency_b"))
    assert {"saliency_a", "saliency_b"} <= set(interpkit.list_explainers())

    class Misspelt:
        @interpkit.hookimpl
        def interpkit_register_explainer(self, register):
            register(interpkit.Saliency)

    with pytest.raises(interpkit.PluginError, match="interpkit_register_explainer"):
        registry_module.register_plugin(Misspelt(), "misspelt")
    monkeypatch.setattr(registry_module, "_registry", None)


def test_get_model_and_get_explainer_name_bad_input():
    with pytest.raises(interpkit.PluginError, match="named by a string"):
        interpkit.get_explainer(["gradcam"])
    with pytest.raises(interpkit.PluginError, match="named by a string"):
        interpkit.get_model(["caltech5_arch1"])
    with pytest.raises(interpkit.InputError, match="no such option.*num_classes"):
        interpkit.get_model("caltech5_arch1", foo=1)
    for options, words in (({"num_classes": -1}, "num_classes"), ({"num_classes": "5"}, "num_classes"),
                           ({"dropout": 1.5}, "dropout")):
        for name in ("caltech5_arch1", "vgg19_slim_caltech5"):
            with pytest.raises(interpkit.InputError, match=words):
                interpkit.get_model(name, **options)
    import numpy as np

    assert interpkit.get_model("caltech5_arch1", num_classes=np.int64(7), dropout=np.float32(0.25)) is not None
    for name in ("caltech5_arch1", "vgg19_slim_caltech5"):  # the weights have 5 classes: 10 was ignored
        with pytest.raises(interpkit.WeightsError, match="have 5 classes, not num_classes=10"):
            interpkit.get_model(name, weights="DEFAULT", num_classes=10)
        assert interpkit.get_model(name, weights="DEFAULT", num_classes=5) is not None


def test_with_warnings_as_errors_a_broken_plugin_is_said_once_and_the_rest_load(fake_plugins):
    """The skipped plugin's warning, raised as an error, left no registry: every later lookup
    loaded the plugins again and raised again."""
    registry_module._registry = None
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        with pytest.raises(PluginWarning, match="skipped"):
            interpkit.list_explainers()
        assert "gradcam" in interpkit.list_explainers() and "shifted_cam" in interpkit.list_explainers()
