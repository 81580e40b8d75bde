import pytest

from repadapter import RepAdapterError
from repadapter.training.config import TrainConfig, resolve_config


def test_defaults_are_the_paper_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.warmup_epochs) == (
        1e-3,
        1e-4,
        64,
        100,
        10,
    )
    assert (cfg.min_lr, cfg.drop_path, cfg.augment, cfg.dim, cfg.groups) == (1e-5, 0.1, "none", 8, 2)
    assert cfg.normalization == "model" and cfg.selection == "val" and cfg.method == "repadapter"


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.005\nepochs: 20\nscale: 0.5\n")
    cfg = resolve_config(path, epochs=30, batch_size=None)
    assert (cfg.lr, cfg.epochs, cfg.scale, cfg.batch_size) == (0.005, 30, "0.5", 64)
    assert resolve_config(path, placement="io").placement == "io"  # a ConvNeXt placement


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nimg_size: null\nscale: 5\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = resolve_config(path)
    assert (cfg.lr, cfg.img_size, cfg.scale) == (0.001, None, "5")


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: [1\n", "is not valid YAML"),
        ("learning_rate: 1\n", "unknown settings \\['learning_rate'\\]"),
        ("- 1\n", "must hold a mapping"),
        ("scale: big\n", "scale must be 'auto', 'paper' or a number"),
        ("warmup_epochs: 100\n", "0 <= warmup_epochs < epochs"),
        ("amp: fp8\n", "amp must be one of"),
        ("placement: ffn\n", "placement must be one of \\('attn', 'block', 'io', 'dwconv'\\)"),
        ("lr: [0.1\nepochs: 3\n", "is not valid YAML: expected ',' or ']', but got ':' at line 2, column 7"),
        ("lr: fast\n", "lr must be a number, got 'fast'"),
        ("epochs: 2.5\n", "epochs must be a whole number, got 2.5"),
        ("pretrained: 1\n", "pretrained must be true or false, got 1"),
        ("img_size: '32'\n", "img_size must be a whole number or null, got '32'"),
        ("lr: 1.0e+31\n", "learning rates must be at most 1e\\+30"),
    ],
)
def test_bad_config_files_are_explained(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RepAdapterError, match=message):
        resolve_config(path)
    with pytest.raises(RepAdapterError, match="does not exist"):
        resolve_config(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"scale": 0}, "scale must be 'auto', 'paper' or a number above 0"),
        ({"scale": -1}, "scale must be 'auto', 'paper' or a number above 0"),
        ({"scale": "nan"}, "scale must be 'auto', 'paper' or a number above 0"),
        ({"lr": 0.0}, "learning rates must be positive"),
        ({"lr": float("inf")}, "every number must be finite"),
        ({"epochs": -2}, "need epochs >= 1"),
        ({"dim": 0}, "dim and groups must be positive"),
        ({"groups": 0}, "dim and groups must be positive"),
        ({"dim": 8, "groups": 3}, "dim=8 is not divisible by groups=3"),
        ({"batch_size": 0}, "batch sizes must be positive"),
        ({"dropout": 1.0}, "dropout must be in \\[0, 1\\)"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"img_size": 0}, "img_size must be positive"),
    ],
)
def test_senseless_numbers_are_refused(settings, message):
    with pytest.raises(RepAdapterError, match=message):
        resolve_config(**settings)


def test_config_names_are_the_registries_names():
    """A config checks --method and --task against its own name lists, so that it imports
    neither registry; those lists are the registries' keys, in order."""
    from repadapter.training.config import METHOD_NAMES, TASK_NAMES
    from repadapter.training.methods import METHODS
    from repadapter.training.tasks import TASK_KIND_MODULES

    assert tuple(METHODS) == METHOD_NAMES and tuple(TASK_KIND_MODULES) == TASK_NAMES


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"method": "prompt"}, "unknown method 'prompt'; methods: repadapter, linear, full"),
        ({"task": "detection"}, "unknown task 'detection'; tasks: classification, segmentation, video"),
    ],
)
def test_unknown_names_are_refused_with_the_known_ones(settings, message):
    with pytest.raises(RepAdapterError, match=message):
        resolve_config(**settings)
