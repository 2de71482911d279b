"""Detection heads (Faster R-CNN, FCOS) and the ``Detector`` that joins them to a backbone.

``DETECTION_HEADS.create(name, feature_info=..., num_classes=..., **options)`` builds a head;
``name`` is ``"faster_rcnn"`` (two-stage, default) or ``"fcos"`` (one-stage).
"""

from backbones.registry import Registry
from heads.detection.detector import Detector
from heads.detection.faster_rcnn import FasterRCNNHead, torchvision_key_map
from heads.detection.fcos import FCOSDetectionHead

DETECTION_HEADS: Registry = Registry("detection head")
DETECTION_HEADS.register("faster_rcnn")(FasterRCNNHead)
DETECTION_HEADS.register("fcos")(FCOSDetectionHead)

__all__ = [
    "DETECTION_HEADS",
    "Detector",
    "FCOSDetectionHead",
    "FasterRCNNHead",
    "torchvision_key_map",
]
