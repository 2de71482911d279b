"""Semantic segmentation task; importing this package registers ``"segment"`` in ``TASKS``."""

from tasks.segment.task import SegmentTask

__all__ = ["SegmentTask"]
