"""Numerical parity: torchvision/timm weights loaded through ``pretrained=`` give their logits.

Each reference model is built with random weights (fixed seed), saved as .pth and
.safetensors in tmp_path, loaded into our backbone, and compared on a 1x3x64x64 input in
eval mode (max abs diff <= 1e-5; in practice the same kernels run, so it is 0).
"""

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from backbones import create_backbone

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d"]
TORCHVISION_SLOW = ["resnet101", "resnet152", "wide_resnet50_2"]
TIMM = ["resnet50d", "seresnet50"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_parity(name: str, ref: torch.nn.Module, tmp_path) -> None:
    ref.eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    torch.save(state, tmp_path / f"{name}.pth")
    save_file(state, str(tmp_path / f"{name}.safetensors"))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
        for suffix in (".pth", ".safetensors"):
            ours = create_backbone(name, num_classes=1000, pretrained=tmp_path / f"{name}{suffix}")
            assert n_params(ours) == n_params(ref)
            got = ours.eval().forward_logits(x)
            assert (got - expected).abs().max().item() <= 1e-5, suffix


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_parity(name, tmp_path):
    torch.manual_seed(0)
    check_parity(name, getattr(torchvision.models, name)(), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_SLOW)
def test_torchvision_parity_large(name, tmp_path):
    test_torchvision_parity(name, tmp_path)


@pytest.mark.parametrize("name", TIMM)
def test_timm_parity(name, tmp_path):
    torch.manual_seed(0)
    check_parity(name, timm.create_model(name, pretrained=False), tmp_path)


def test_resnet50_param_count_is_torchvisions():
    with torch.device("meta"):
        assert n_params(create_backbone("resnet50", num_classes=1000)) == 25_557_032


@pytest.mark.parametrize(
    "name, millions", [("resnet20", 0.27), ("resnet56", 0.85), ("resnet110", 1.7)]
)
def test_cifar_param_counts_match_the_paper(name, millions):
    """He et al. 2015 table 6 (option A shortcuts), to 2 significant digits."""
    with torch.device("meta"):
        count = n_params(create_backbone(name, num_classes=10))
    assert float(f"{count / 1e6:.2g}") == millions


def test_timm_wrapper_features_match_timm_model(tmp_path):
    """``timm:`` loads a full timm checkpoint and returns timm's own feature maps."""
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    ours = create_backbone("timm:resnet18", pretrained=tmp_path / "r18.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.layer4(
            ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.act1(ref.bn1(ref.conv1(x)))))))
        )
        assert torch.equal(ours(x)["c5"], expected)
