"""Our Faster R-CNN (registry ResNet-50 + FPN head) reproduces torchvision's exactly."""

from __future__ import annotations

import copy

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from backbones import create_backbone
from heads.detection import Detector, FasterRCNNHead, torchvision_key_map


def test_fasterrcnn_resnet50_fpn_parity():
    torch.manual_seed(0)
    # torchvision's backbone: FrozenBatchNorm2d, trainable_layers=3 (stem + layer1 frozen)
    reference = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=224, max_size=320
    ).eval()
    backbone = create_backbone("resnet50", norm_layer="frozen_batchnorm", frozen_stages=1)
    ours = Detector(backbone, FasterRCNNHead(backbone.feature_info, 91), min_size=224, max_size=320)
    ours.load_state_dict(torchvision_key_map(reference.state_dict()))  # strict: every key maps
    ours.eval()
    images = list(torch.rand(1, 3, 224, 320))
    with torch.no_grad():
        expected = reference(images)[0]
        got = ours(images).preds[0]
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-5, rtol=0)
    assert torch.equal(got["labels"], expected["labels"])


def test_losses_in_eval_mode_match_training_mode_parts():
    """Losses come whenever targets are given; preds only in eval mode."""
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", out_indices=(3, 4), norm_layer="groupnorm")
    head = FasterRCNNHead(backbone.feature_info, 3, anchor_sizes=(32, 64, 128), fpn_channels=32)
    model = Detector(backbone, head, min_size=96, max_size=96)
    images = list(torch.rand(2, 3, 96, 96))
    targets = [
        dict(boxes=torch.tensor([[10.0, 10, 60, 50]]), labels=torch.tensor([1])),
        dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)),
    ]
    train_out = model.train()(images, targets)
    eval_out = model.eval()(images, targets)
    keys = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert set(train_out.losses) == set(eval_out.losses) == keys
    assert train_out.preds == [] and len(eval_out.preds) == 2
    assert model(images).losses == {}


def test_a_flat_first_image_does_not_change_later_detections():
    """torchvision's MultiScaleRoIAlign guesses the levels' scales from the first batch's image
    height and keeps them: after a 100 x 1000 panorama (resized to 16 x 160, padded to 32),
    every later image would pool c2 at 1/2 instead of 1/4. The head sets them from the strides."""
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", norm_layer="groupnorm")
    head = FasterRCNNHead(backbone.feature_info, 3, fpn_channels=32, score_thresh=0.0)
    fresh = Detector(backbone, head, min_size=96, max_size=160).eval()
    after_flat = copy.deepcopy(fresh)
    image = torch.rand(3, 96, 128)
    with torch.no_grad():
        after_flat([torch.rand(3, 100, 1000)])
        expected, got = fresh([image]).preds[0], after_flat([image]).preds[0]
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(got, expected)
