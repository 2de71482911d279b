"""Local checkpoint loading: formats, prefixes, strictness and refused pickles."""

import os

import pytest
import torch
from safetensors.torch import save_file

from backbones import WeightsMismatchError, create_backbone, load_weights


@pytest.fixture(scope="module")
def r20_state():
    torch.manual_seed(0)
    return create_backbone("resnet20", num_classes=10).state_dict()


def same_weights(a: torch.nn.Module, state: dict) -> bool:
    own = a.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if k in own)


def test_our_checkpoint_formats_load(r20_state, tmp_path):
    task_model = {f"backbone.{k}": v for k, v in r20_state.items()}
    task_model["head.weight"] = torch.zeros(3)  # another part of the task model: ignored
    save_file(task_model, str(tmp_path / "model.safetensors"))
    torch.save({"model": r20_state, "epoch": 3}, tmp_path / "last.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in r20_state.items()}}, tmp_path / "d.pt")
    for file in ("model.safetensors", "last.pt", "d.pt"):
        model = create_backbone("resnet20", num_classes=10)
        report = load_weights(model, tmp_path / file)
        assert report.ok and same_weights(model, r20_state), file
    assert report.prefix == "module."


def test_classifier_is_expected_unused_without_num_classes(r20_state, tmp_path):
    torch.save(r20_state, tmp_path / "r20.pth")
    model = create_backbone("resnet20", pretrained=tmp_path / "r20.pth")
    report = load_weights(model, tmp_path / "r20.pth")
    assert report.ok and sorted(report.unused) == ["fc.bias", "fc.weight"]
    assert same_weights(model, r20_state)


def test_frozen_batchnorm_takes_batchnorm_weights(r20_state, tmp_path):
    torch.save(r20_state, tmp_path / "r20.pth")
    model = create_backbone(
        "resnet20", norm_layer="frozen_batchnorm", pretrained=tmp_path / "r20.pth"
    )
    assert torch.equal(model.bn1.running_var, r20_state["bn1.running_var"])


def test_mismatch_lists_missing_unexpected_and_shapes(r20_state, tmp_path):
    state = dict(r20_state)
    state.pop("layer1.0.conv1.weight")
    state["layer9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatchError) as err:
        create_backbone("resnet32", num_classes=100, pretrained=tmp_path / "bad.pth")
    msg = str(err.value)
    assert "bad.pth does not fit resnet32" in msg
    assert "missing in file: layer1.0.conv1.weight" in msg
    assert "unexpected: layer9.weight" in msg
    assert "fc.weight file [10, 64] vs model [100, 64]" in msg
    assert "strict=False" in msg


def test_non_strict_loads_what_fits_and_reports_the_rest(r20_state, tmp_path):
    torch.save(r20_state, tmp_path / "r20.pth")
    model = create_backbone("resnet20", num_classes=100)
    report = load_weights(model, tmp_path / "r20.pth", strict=False)
    assert not report.ok and [k for k, _, _ in report.mismatched] == ["fc.weight", "fc.bias"]
    assert torch.equal(model.conv1.weight, r20_state["conv1.weight"])
    assert "2 shape mismatches" in str(report)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused to load .*evil.pth.*holds code"):
        create_backbone("resnet20", pretrained=tmp_path / "evil.pth")


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("resnet20", pretrained=tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="is not a state dict"):
        create_backbone("resnet20", pretrained=tmp_path / "list.pth")
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match="got a dict whose 'epoch' is not a tensor"):
        create_backbone("resnet20", pretrained=tmp_path / "mixed.pth")


@pytest.mark.parametrize(
    "name, data",
    [("text.safetensors", b"hello"), ("notes.pth", b"# a README"), ("cut.pth", None)],
)
def test_files_that_are_not_checkpoints_are_named(tmp_path, name, data):
    """A text file, a safetensors header that is too small, a truncated torch.save file:
    one error naming the file (safetensors, pickle and zip errors were tracebacks)."""
    path = tmp_path / name
    if data is None:
        torch.save({"conv1.weight": torch.zeros(100)}, path)
        data = path.read_bytes()[:300]
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"'{path}' is not a readable checkpoint"):
        create_backbone("resnet20", pretrained=path)
