"""Config loading: typed defaults <- YAML <- key=value, with one-line errors from the tools."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, config_to_yaml, load_config, require_path
from tasks.distributed import pick_device
from tasks.segment.config import SegmentConfig
from tasks.toy import ToyConfig

ROOT = Path(__file__).resolve().parents[1]


def tool_main(name: str):
    return runpy.run_path(str(ROOT / "tools" / f"{name}.py"), run_name="tool")["main"]


def test_layers_merge_in_order(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.5\n  epochs: 7\nmodel:\n  width: 4\n")
    cfg = load_config(ToyConfig, recipe, ["train.lr=0.25", "data.num_classes=3"])
    assert isinstance(cfg, ToyConfig)
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.width) == (0.25, 7, 4)
    assert cfg.data.num_classes == 3
    assert cfg.train.batch_size == ToyConfig().train.batch_size  # untouched default
    assert (
        load_config(
            ToyConfig, overrides=["model.backbone_weights=/x.safetensors"]
        ).model.backbone_weights
        == "/x.safetensors"
    )


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'train.lrr' on the command line; did you mean train.lr",
    ):
        load_config(ToyConfig, overrides=["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'lr'.*did you mean train.lr"):
        load_config(ToyConfig, overrides=["lr=0.1"])


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  epoch: 3\n")
    with pytest.raises(
        ConfigError, match=r"'train.epoch' in '.*bad.yaml'; did you mean train.epochs"
    ):
        load_config(ToyConfig, recipe)


def test_wrong_type_names_key_value_and_type() -> None:
    with pytest.raises(
        ConfigError, match=r"'train.lr' on the command line: got 'fast' \(str\), expected float"
    ):
        load_config(ToyConfig, overrides=["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"'train.epochs'.*got 1.5 \(float\), expected int"):
        load_config(ToyConfig, overrides=["train.epochs=1.5"])
    with pytest.raises(  # a shell turns data.cache_dir="" into data.cache_dir=, read as None
        ConfigError, match=r"got None \(NoneType\), expected str; .* write 'train.optimizer=\"\"'"
    ):
        load_config(ToyConfig, overrides=["train.optimizer="])
    with pytest.raises(ConfigError, match=r"'model.lovasz_weight' = -0.5: expected a value >= 0"):
        load_config(SegmentConfig, overrides=["model.lovasz_weight=-0.5"])


def test_bad_choice_and_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'train.optimizer' = 'adam' is not one of sgd, adamw; did you mean 'adamw'",
    ):
        load_config(ToyConfig, overrides=["train.optimizer=adam"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(ToyConfig, overrides=["train.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ToyConfig, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(ToyConfig, tmp_path / "list.yaml")


def test_yaml_round_trip() -> None:
    cfg = load_config(ToyConfig, overrides=["train.ema=0.99"])
    again = load_config(ToyConfig, yaml_text=config_to_yaml(cfg))
    assert again == cfg


def test_require_path(tmp_path: Path) -> None:
    assert require_path(tmp_path, "data.train") == tmp_path
    with pytest.raises(ConfigError, match=r"'data.train': folder '/nope/x' does not exist"):
        require_path("/nope/x", "data.train")
    with pytest.raises(ConfigError, match="'data.val' is not set"):
        require_path(None, "data.val")


def test_print_config_prints_merged_yaml(capsys: pytest.CaptureFixture) -> None:
    main = tool_main("train")
    # overrides on both sides of an option (argparse alone stops at the first option)
    assert main(["--task", "_toy", "train.lr=0.125", "--print-config", "model.width=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.125 and printed["model"]["width"] == 3
    assert set(printed) == {"model", "data", "train"}


def test_tool_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    main = tool_main("train")
    assert main(["--task", "_toy", "--print-config", "train.bach_size=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: unknown config key 'train.bach_size'") and "train.batch_size" in err
    )
    assert "\n" not in err and "Traceback" not in err
    assert main(["--task", "_tyo", "--print-config"]) == 2
    assert "did you mean _toy" in capsys.readouterr().err


def test_model_option_errors_from_backbones_are_one_line(tmp_path, capsys) -> None:
    """An option checked inside backbones/ or heads/ (here the norm name) reaches the user as
    one ``error:`` line with exit code 2, like a config error, not as a traceback."""
    main = tool_main("train")
    args = ["--task", "classify", "model.norm=nonsense", "--out", str(tmp_path / "run"),
            "data.synthetic_train_per_class=2", "data.synthetic_val_per_class=1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: norm_layer='nonsense' is not known") and "\n" not in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", r"'train.batch_size' = 0: expected a value >= 1"),
        ("train.grad_accum=0", r"'train.grad_accum' = 0: expected a value >= 1"),
        ("train.max_minutes=-1", r"'train.max_minutes' = -1.0: expected a value >= 0"),
        ("train.log_every=0", r"'train.log_every' = 0: expected a value >= 1"),  # % 0 mid-run
        ("train.eval_every=0", r"'train.eval_every' = 0: expected a value >= 1"),
        ("train.momentum=-3", r"'train.momentum' = -3.0: expected a value >= 0"),
        ("train.warmup=5", r"'train.warmup' = 5.0: expected a value <= 1"),
        ("train.lr=nan", r"'train.lr' = nan: expected a finite number"),
        ("train.weight_decay=inf", r"'train.weight_decay' = inf: expected a finite number"),
        ("train=1", r"'train' on the command line: got 1, expected a section of keys"),
        ("train.device=tpu", r"device 'tpu' is not a device name; expected auto, cpu, cuda"),
    ],
)
def test_out_of_range_engine_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg = load_config(ToyConfig, overrides=[override])
        pick_device(cfg.train.device)  # what the engine does first with it


def test_config_file_that_is_a_folder_or_binary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; expected a YAML file"):
        load_config(ToyConfig, tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x00\xf0\x9f\xff binary")
    with pytest.raises(ConfigError, match=r"w\.safetensors' is not valid YAML"):
        load_config(ToyConfig, tmp_path / "w.safetensors")


def test_val_data_without_train_data_is_refused() -> None:
    from tasks import TASKS
    from tasks.toy import ToyTask  # noqa: F401 - registers "_toy"

    cfg = load_config(TASKS.get("classify").config_class, overrides=["data.val=/data/val"])
    with pytest.raises(ConfigError, match="data.val='/data/val' is set but data.train is not"):
        TASKS.create("classify", cfg=cfg)


def test_yaml_mistakes_are_one_line_naming_line_and_column(tmp_path: Path) -> None:
    cases = {
        "tab.yaml": ("train:\n\tlr: 0.1\n", r"line 2, column 1 \(a tab: YAML indents with spaces"),
        "dup.yaml": ("train:\n  lr: 0.1\ntrain:\n  lr: 0.2\n", r"duplicate key train at line 3"),
        "scalar.yaml": ("just a string\n", r"must hold a mapping of keys .*not a str"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message) as info:
            load_config(ToyConfig, tmp_path / name)
        assert "\n" not in str(info.value)
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(ToyConfig, tmp_path / "empty.yaml") == load_config(ToyConfig)


def test_unresolvable_interpolation_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'train.lr' = '\$\{oops\}': cannot resolve it"):
        load_config(ToyConfig, overrides=["train.lr=${oops}"])
    (tmp_path / "i.yaml").write_text("train:\n  lr: ${model.nope}\n")
    with pytest.raises(ConfigError, match=r"'train.lr'.*cannot resolve.*model.nope"):
        load_config(ToyConfig, tmp_path / "i.yaml")
    assert load_config(ToyConfig, overrides=["train.lr=${train.momentum}"]).train.lr == 0.9


def test_empty_override_of_an_optional_key_is_refused() -> None:
    """`data.train=$DATA` with DATA unset used to mean data.train=None: silently synthetic."""
    from tasks.classify.config import ClassifyConfig

    with pytest.raises(ConfigError, match=r"'data.train' on the command line has an empty value"):
        load_config(ClassifyConfig, overrides=["data.train="])
    assert load_config(ClassifyConfig, overrides=["data.train=null"]).data.train is None


@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "cuda:x"])
def test_devices_torch_knows_but_we_do_not_run_on_are_config_errors(device: str) -> None:
    with pytest.raises(ConfigError, match=rf"device '{device}' is not a device name"):
        pick_device(load_config(ToyConfig, overrides=[f"train.device={device}"]).train.device)
