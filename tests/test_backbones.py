"""Every registered backbone: declared feature_info against real outputs, dilation, freezing,
options, the residual gradient identity and readable errors for bad input."""

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from backbones import create_backbone, list_backbones
from backbones.blocks import BasicBlock, Bottleneck, PreActBasicBlock
from backbones.norm import make_norm

ALL = list_backbones()
HUGE = {"resnet101", "resnet152", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"}


def check_shapes(model, feats, h, w):
    assert list(feats) == [f.name for f in model.feature_info]
    for f in model.feature_info:
        assert feats[f.name].shape[1] == f.channels, f
        assert feats[f.name].shape[-2:] == (-(-h // f.stride), -(-w // f.stride)), f


@pytest.mark.parametrize("name", [n for n in ALL if n not in HUGE])
def test_forward_two_sizes_matches_feature_info(name):
    torch.manual_seed(0)
    model = create_backbone(name, out_indices=None).eval()
    with torch.no_grad():
        for h, w in ((32, 32), (40, 24)):
            check_shapes(model, model(torch.randn(1, 3, h, w)), h, w)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HUGE))
def test_forward_two_sizes_huge(name):
    test_forward_two_sizes_matches_feature_info(name)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_shapes(name, output_stride):
    """Shapes under dilation, computed on the meta device (no weights, no arithmetic)."""
    with torch.device("meta"):
        model = create_backbone(name, output_stride=output_stride)
        feats = model(torch.empty(1, 3, 64, 96))
    check_shapes(model, feats, 64, 96)
    assert max(f.stride for f in model.feature_info) <= output_stride


def test_output_stride_matches_torchvision_dilation():
    """OS 8 dilates layer3 and layer4 like replace_stride_with_dilation=[False, True, True]."""
    from torchvision.models import resnet50

    with torch.device("meta"):
        ours = create_backbone("resnet50", output_stride=8)
        ref = resnet50(replace_stride_with_dilation=[False, True, True])
    theirs = dict(ref.named_modules())
    for name, a in ours.named_modules():
        if isinstance(a, nn.Conv2d):
            b = theirs[name]
            assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding), name
    assert [f.stride for f in ours.feature_info] == [4, 8, 8, 8]


@pytest.mark.parametrize("name", ALL)
def test_frozen_stages_stay_frozen_and_in_eval(name):
    with torch.device("meta"):
        model = create_backbone(name, frozen_stages=2).train()
    frozen = [model.conv1, model.bn1, model.layer1, model.layer2]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert model.layer3.training


def test_out_indices_select_levels_and_skip_later_stages():
    model = create_backbone("resnet18", out_indices=(0, 2))
    feats = model(torch.randn(1, 3, 64, 64))
    assert [(f.name, f.channels, f.stride) for f in model.feature_info] == [
        ("c1", 64, 2),
        ("c3", 128, 8),
    ]
    check_shapes(model, feats, 64, 64)


@pytest.mark.parametrize("norm_layer", ["batchnorm", "frozen_batchnorm", "groupnorm"])
def test_norm_layer_choices(norm_layer):
    model = create_backbone("resnet20", norm_layer=norm_layer, num_classes=10)
    kind = {"batchnorm": nn.BatchNorm2d, "frozen_batchnorm": FrozenBatchNorm2d}
    expected = kind.get(norm_layer, nn.GroupNorm)
    assert isinstance(model.bn1, expected) and isinstance(model.layer3[0].bn2, expected)
    assert model.forward_logits(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert (
        make_norm("groupnorm")(16).num_groups == 16 and make_norm("groupnorm")(256).num_groups == 32
    )
    custom = create_backbone("resnet20", norm_layer=lambda c: nn.GroupNorm(1, c))
    assert custom.bn1.num_groups == 1


def test_options_in_chans_zero_init_drop_path_classifier():
    model = create_backbone(
        "resnet50", in_chans=1, zero_init_residual=True, drop_path_rate=0.2, num_classes=7
    )
    assert model.conv1.weight.shape[1] == 1
    assert all(b.bn3.weight.abs().sum() == 0 for b in model.modules() if isinstance(b, Bottleneck))
    blocks = [b for b in model.modules() if isinstance(b, Bottleneck)]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    assert model.forward_logits(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    with pytest.raises(RuntimeError, match="num_classes=0"):
        create_backbone("resnet18").forward_logits(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBasicBlock])
def test_shortcut_carries_the_gradient_exactly(block):
    """With the residual branch zeroed, dF/dx = 0 and dL/dx == dL/dy exactly."""
    torch.manual_seed(0)
    channels = 16 * block.expansion
    blk = block(channels, 16).train()
    blk.zero_init_last()
    x = (torch.rand(2, channels, 8, 8) + 0.1).requires_grad_()  # > 0: a ReLU output
    y = blk(x)
    grad_y = torch.randn_like(y)
    (grad_x,) = torch.autograd.grad(y, x, grad_y)
    assert torch.equal(y, x)
    assert torch.equal(grad_x, grad_y)


def test_plain_twin_has_no_shortcut():
    plain, res = create_backbone("resnet20_plain"), create_backbone("resnet20")
    assert all(not b.residual for b in plain.modules() if isinstance(b, BasicBlock))
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in res.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"out_indices": (1, 5)},
            r"out_indices=\(1, 5\) is out of range; expected indices in 0..4",
        ),
        ({"output_stride": 12}, "output_stride=12 is not supported; expected one of 8, 16, 32"),
        ({"frozen_stages": 5}, "frozen_stages=5 is out of range"),
        ({"norm_layer": "layernorm"}, "norm_layer='layernorm' is not known"),
    ],
)
def test_bad_options_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_backbone("resnet18", **kwargs)


def test_cifar_out_indices_range_is_three_stages():
    with pytest.raises(ValueError, match="expected indices in 0..3"):
        create_backbone("resnet20", out_indices=(4,))


def test_wrong_channel_count_names_in_chans():
    model = create_backbone("resnet18")
    with pytest.raises(ValueError, match="in_chans=3 but the input has 1 channels"):
        model(torch.randn(1, 1, 32, 32))


def test_timm_backbone_contract():
    model = create_backbone("timm:resnet18", output_stride=16, frozen_stages=1)
    assert [(f.name, f.stride) for f in model.feature_info] == [
        ("c2", 4), ("c3", 8), ("c4", 16), ("c5", 16),
    ]  # fmt: skip
    check_shapes(model, model(torch.randn(1, 3, 64, 64)), 64, 64)
    assert not any(p.requires_grad for p in model.model.layer1.parameters())
    assert not model.train().model.layer1[0].bn1.training
    with pytest.raises(ValueError, match="out_indices=.* is out of range"):
        create_backbone("timm:resnet18", out_indices=(7,))
    # detection's default c3..c5 = [2, 3, 4] is out of a ConvNeXt's range (levels 0..3 at
    # strides 4..32): the message says which index to pick for which stride
    with pytest.raises(ValueError, match=r"by stride: 0 \(stride 4\), 1 \(stride 8\), 2 "):
        create_backbone("timm:convnext_atto", out_indices=(2, 3, 4))


def test_timm_vision_transformer_gives_one_named_level():
    """A ViT's blocks all have stride 16: by default one level (three were all named c4, and
    heads find levels by name); asking for dilation is an option error, not timm's TypeError."""
    model = create_backbone("timm:vit_tiny_patch16_224")
    assert [(f.name, f.stride) for f in model.feature_info] == [("c4", 16)]
    assert model(torch.randn(1, 3, 224, 224))["c4"].shape == (1, 192, 14, 14)
    with pytest.raises(ValueError, match=r"does not take output_stride=8 .*left at the default"):
        create_backbone("timm:vit_tiny_patch16_224", output_stride=8)
    with pytest.raises(ValueError, match=r"picks levels of one stride \(\['c4', 'c4'\]\)"):
        create_backbone("timm:vit_tiny_patch16_224", out_indices=(10, 11))


def test_timm_vision_transformer_takes_any_size_and_its_own_output_stride():
    """Built for 224x224, a ViT refused every other size (detection resizes, segmentation
    crops); output_stride=16 (segmentation's default) is its native stride, not dilation."""
    model = create_backbone("timm:vit_tiny_patch16_224", output_stride=16).eval()
    with torch.no_grad():
        check_shapes(model, model(torch.randn(1, 3, 97, 131)), 97, 131)


def test_timm_nhwc_levels_are_returned_nchw():
    """timm's Swin / MambaOut feature nets return [B, H, W, C]; feature_info (and every head)
    means [B, C, H, W]."""
    model = create_backbone("timm:mambaout_femto").eval()
    with torch.no_grad():
        check_shapes(model, model(torch.randn(1, 3, 64, 96)), 64, 96)


@pytest.mark.parametrize(
    ("name", "frozen", "trainable"),
    [  # EfficientNet / MobileNetV3 feature nets keep blocks nested ("blocks.0", not blocks_0)
        ("mobilenetv3_small_100", ["conv_stem", "bn1", "blocks.0"], ["blocks.1", "blocks.2"]),
        # a ViT's blocks sit in a wrapper, its embeddings are parameters of the model itself
        ("vit_tiny_patch16_224", ["model.patch_embed", "model.blocks.9"], ["model.blocks.10"]),
    ],
)
def test_timm_frozen_stages_of_nested_feature_nets(name, frozen, trainable):
    model = create_backbone(f"timm:{name}", frozen_stages=1).train()
    for path in frozen:
        module = model.model.get_submodule(path)
        assert not any(p.requires_grad for p in module.parameters()), path
        assert not any(m.training for m in module.modules()), path
    for path in trainable:
        assert all(p.requires_grad for p in model.model.get_submodule(path).parameters()), path
    if name.startswith("vit"):
        assert not model.model.model.pos_embed.requires_grad
        assert not model.model.model.cls_token.requires_grad


def test_timm_option_a_model_asserts_against_is_an_option_error():
    """GhostNet asserts output_stride == 32 inside timm: one error naming model and option."""
    with pytest.raises(ValueError, match=r"timm:ghostnet_100 does not take output_stride=16"):
        create_backbone("timm:ghostnet_100", output_stride=16)
