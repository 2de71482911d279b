"""Segmentation heads: output shapes at output stride 8, 16 and 32 on odd sizes, losses, and
numerical parity of our DeepLabV3-ResNet50 with torchvision's ``deeplabv3_resnet50``."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.segmentation import deeplabv3_resnet50

from backbones import create_backbone
from heads.segmentation import (
    SEG_HEADS,
    FCNAuxHead,
    SegmentationLoss,
    SegmentationModel,
    from_torchvision_state_dict,
)
from heads.segmentation.base import atrous_rates
from heads.segmentation.pspnet import AdaptiveAvgPool


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("head", ["deeplabv3", "deeplabv3plus", "pspnet"])
def test_head_output_shapes_on_odd_sizes(head, output_stride):
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", output_stride=output_stride)
    assert backbone.feature_info[-1].stride == output_stride
    info = backbone.feature_info
    model = SegmentationModel(
        backbone,
        SEG_HEADS.create(head, feature_info=info, num_classes=5),
        FCNAuxHead(info, 5, feature=info[-2].name),
    )
    x = torch.randn(2, 3, 45, 37)
    target = torch.randint(0, 5, (2, 45, 37))
    target[:, :3] = 255
    out = model(x, target)
    assert out.preds.shape == (2, 5, 45, 37)
    assert set(out.losses) == {"ce", "aux_ce"} and all(v.isfinite() for v in out.losses.values())
    out.losses["ce"].backward()
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 51))
    assert out.preds.shape == (1, 5, 33, 51) and out.losses == {}


def test_aspp_rates_follow_output_stride():
    assert atrous_rates(16) == (6, 12, 18) and atrous_rates(8) == (12, 24, 36)
    for stride, rates in ((8, (12, 24, 36)), (16, (6, 12, 18))):
        info = create_backbone("resnet18", output_stride=stride).feature_info
        head = SEG_HEADS.create("deeplabv3", feature_info=info, num_classes=2)
        convs = head.classifier[0].convs  # [1x1, three atrous, pooling]
        assert tuple(c[0].dilation[0] for c in convs[1:4]) == rates


def test_loss_ignores_void_and_adds_dice():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    void = target.clone()
    void[:, :2] = 255
    plain = SegmentationLoss()(logits, void)["ce"]
    kept = torch.nn.functional.cross_entropy(logits[:, :, 2:], target[:, 2:])
    assert torch.allclose(plain, kept)
    both = SegmentationLoss(dice_weight=0.5, class_weights=[1.0, 2.0, 1.0])(logits, void)
    assert set(both) == {"ce", "dice"} and 0 <= both["dice"] <= 0.5
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert SegmentationLoss(dice_weight=1.0)(perfect, target)["dice"] < 1e-3
    all_void = SegmentationLoss()(logits, torch.full_like(target, 255))["ce"]
    assert all_void == 0 and all_void.requires_grad


def test_lovasz_term_equals_one_minus_iou_on_hard_predictions():
    """The Lovasz extension is exact at 0/1 predictions: the term is then the mean over the
    classes present of 1 - IoU (void pixels left out), here computed by hand."""
    target = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 255]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 0]]])  # the void pixel's guess is moot
    logits = torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).float() * 60
    logits.requires_grad_()
    # class 0: 2 shared pixels of 4 in the union; class 1: 3 of 5; class 2 absent from target
    expected = ((1 - 2 / 4) + (1 - 3 / 5)) / 2
    loss = SegmentationLoss(lovasz_weight=2.0)(logits, target)
    assert set(loss) == {"ce", "lovasz"}
    assert torch.allclose(loss["lovasz"], torch.tensor(2.0 * expected), atol=1e-5)
    soft = torch.randn(1, 3, 2, 4, requires_grad=True)
    SegmentationLoss(lovasz_weight=1.0)(soft, target)["lovasz"].backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    all_void = SegmentationLoss(lovasz_weight=1.0)(soft, torch.full_like(target, 255))["lovasz"]
    assert all_void == 0 and all_void.requires_grad


def test_deeplabv3_resnet50_matches_torchvision():
    """Random torchvision weights, loaded through ``from_torchvision_state_dict`` (a prefix
    rename: ``classifier.*`` -> ``head.classifier.*``, ``aux_classifier.*`` ->
    ``aux_head.classifier.*``; ``backbone.*`` unchanged), give the same logits."""
    torch.manual_seed(0)
    ref = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=21)
    backbone = create_backbone("resnet50", output_stride=8)  # [False, True, True] dilation
    ours = SegmentationModel(
        backbone, SEG_HEADS.create("deeplabv3", feature_info=backbone.feature_info, num_classes=21)
    )
    missing, unexpected = ours.load_state_dict(
        from_torchvision_state_dict(ref.state_dict()), strict=True
    )
    assert not missing and not unexpected
    # perturb BN statistics so the comparison exercises them, then copy them over too
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(from_torchvision_state_dict(ref.state_dict()))
    ref.eval(), ours.eval()
    x = torch.randn(1, 3, 129, 97)
    with torch.no_grad():
        expected = ref(x)["out"]
        got = ours(x).preds
    assert got.shape == expected.shape == (1, 21, 129, 97)
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 4), (17, 23)])
def test_pyramid_pooling_equals_adaptive_avg_pool(size):
    """PSPNet's bins as matrix products (exportable with dynamic sizes) average exactly the
    pixels ``nn.AdaptiveAvgPool2d`` does, also where bins overlap (sizes not divisible)."""
    x = torch.randn(2, 3, *size)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(AdaptiveAvgPool(bins)(x), torch.nn.AdaptiveAvgPool2d(bins)(x))
