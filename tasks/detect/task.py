"""Object detection: COCO / VOC folders (or synthetic shapes), any backbone, COCO box AP.

Data flow: ``DetectionDataset`` items ``(uint8 [3, H, W], target)`` -> batches of lists (images
keep their sizes) -> ``train_step`` scales to 0..1 on the device, drops ignore regions from
the targets -> ``Detector`` resizes + normalises, runs backbone + head -> summed losses.
``primary_metric`` is COCO ``AP`` (IoU 0.50:0.95, a fraction): it rewards box precision that
AP50 cannot see; ``AP50`` is reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from backbones import create_backbone
from heads.detection import DETECTION_HEADS, Detector
from tasks.base import TASKS, Task, write_predictions
from tasks.data import SYNTHETIC_VAL_SEED_OFFSET
from tasks.detect.augment import build_augment
from tasks.detect.config import DetectConfig
from tasks.detect.data_voc import has_val_split
from tasks.detect.dataset import (
    DetectionDataset,
    ShapesDataset,
    Target,
    collate,
    load_detection_folder,
)
from tasks.detect.draw import draw_detections, plot_precision_recall, save_grid, save_image
from tasks.detect.metrics import coco_evaluate, ground_truth_entry
from tasks.images import DataError, read_image_rgb
from tasks.shapes import SHAPE_CLASSES


@TASKS.register("detect")
class DetectTask(Task):
    """Box detection; ``evaluate`` returns COCO AP, AP50, AP75, APs/m/l, AR and per-class AP."""

    name = "detect"
    config_class = DetectConfig
    primary_metric = "AP"
    writes_image_files = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.category_ids: list[int] = []  # COCO id of label k: category_ids[k - 1]
        self.fixed_boxes = 0  # boxes clipped or dropped by data.fix_boxes
        self.last_precision: np.ndarray | None = None  # COCOeval precision of the last evaluate

    # ---- data -------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.cfg.data
        augment = build_augment(d.augment)
        if d.train is None:
            self.class_names = list(SHAPE_CLASSES)
            self.category_ids = list(range(1, len(SHAPE_CLASSES) + 1))
            seed, size = self.cfg.train.seed, d.shapes_size
            train = ShapesDataset(d.shapes_train, seed=seed, size=size, augment=augment)
            val = ShapesDataset(d.shapes_val, seed=seed + SYNTHETIC_VAL_SEED_OFFSET, size=size)
            return train, val
        given = list(d.classes) or None
        val_dir = self._val_dir()
        separate = val_dir is not None and Path(val_dir).resolve() != Path(d.train).resolve()
        records, names, ids = load_detection_folder(
            d.train,
            field="data.train",
            class_names=given,
            fix=d.fix_boxes,
            separate_val_dir=separate,
        )
        if not names:
            raise DataError(
                f"data.train={d.train!r}: no object classes in its annotations (expected at "
                "least one labelled object)"
            )
        if d.val is None and val_dir is not None:
            print(f"data.val not set: validating on the val/test list of data.train={d.train!r}")
        if val_dir is None:
            n_val = max(1, round(len(records) * d.val_fraction))
            if len(records) <= n_val:
                raise DataError(
                    f"data.train={d.train!r} has {len(records)} image(s); cannot hold out "
                    f"data.val_fraction={d.val_fraction} of them for validation and still "
                    "train (add images or set data.val)"
                )
            order = np.random.default_rng(d.split_seed).permutation(len(records))
            val_records = [records[i] for i in sorted(order[:n_val])]
            records = [records[i] for i in sorted(order[n_val:])]
        else:
            val_records, _, _ = load_detection_folder(
                val_dir, field="data.val", class_names=names, fix=d.fix_boxes
            )
        self.class_names, self.category_ids = names, ids
        train, val = DetectionDataset(records, augment), DetectionDataset(val_records)
        self.fixed_boxes = train.fixed + val.fixed
        if self.fixed_boxes:
            print(f"data.fix_boxes: clipped or dropped {self.fixed_boxes} boxes")
        return train, val

    def build_val_dataset(self) -> Dataset:
        """The validation set alone when its classes are known (``tools/eval.py`` after
        loading a checkpoint): the training annotations are not read, so they may be gone."""
        d, val_dir = self.cfg.data, self._val_dir()
        if d.train is None or val_dir is None or not self.class_names:
            return self.build_datasets()[1]
        records, _, ids = load_detection_folder(
            val_dir, field="data.val", class_names=list(self.class_names), fix=d.fix_boxes
        )
        self.category_ids = ids
        return DetectionDataset(records)

    def _val_dir(self) -> str | None:
        """data.val; unset, a VOCdevkit data.train that ships val.txt/test.txt validates on
        that list (instead of holding out part of train.txt and never reading val.txt)."""
        d = self.cfg.data
        if d.val is None and d.train is not None and has_val_split(Path(d.train)):
            return d.train
        return d.val

    def collate(self, samples: Sequence[Any]) -> Any:
        return collate(samples)

    # ---- model ------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if not self.class_names:
            raise RuntimeError("call build_datasets() before build_model(): it sets class_names")
        m = self.cfg.model
        backbone = create_backbone(
            m.backbone,
            out_indices=tuple(m.out_indices),
            frozen_stages=m.frozen_stages,
            norm_layer=m.norm,
        )
        common = dict(
            feature_info=backbone.feature_info,
            num_classes=len(self.class_names) + 1,
            fpn_channels=m.fpn_channels,
            norm=m.head_norm,
            score_thresh=m.score_thresh,
            nms_thresh=m.nms_thresh,
            detections_per_img=m.detections_per_img,
        )
        if m.head == "faster_rcnn":
            common.update(
                anchor_sizes=tuple(m.anchor_sizes),
                aspect_ratios=tuple(m.aspect_ratios),
                box_head=m.box_head,
                representation_size=m.representation_size,
                rpn_pre_nms_top_n=(m.rpn_pre_nms_top_n_train, m.rpn_pre_nms_top_n_test),
                rpn_post_nms_top_n=(m.rpn_post_nms_top_n_train, m.rpn_post_nms_top_n_test),
                rpn_batch_size_per_image=m.rpn_batch_size_per_image,
                box_batch_size_per_image=m.box_batch_size_per_image,
            )
        head = DETECTION_HEADS.create(m.head, **common)
        return Detector(backbone, head, min_size=m.min_size, max_size=m.max_size)

    # ---- train / eval -----------------------------------------------------------------
    @staticmethod
    def _to_device(
        batch: tuple[list[Tensor], list[Target]], device: torch.device
    ) -> tuple[list[Tensor], list[Target]]:
        images, targets = batch
        images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
        return images, [{k: v.to(device) for k, v in t.items()} for t in targets]

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets = self._to_device(batch, device)
        # ignore regions (crowd / VOC difficult) are not targets: the detectors cannot ignore
        keep = [~t["iscrowd"] for t in targets]
        targets = [
            dict(boxes=t["boxes"][k], labels=t["labels"][k])
            for t, k in zip(targets, keep, strict=True)
        ]
        losses = model(images, targets).losses
        return {"loss": sum(losses.values()), **losses}

    @torch.no_grad()
    def detect(self, model: nn.Module, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """float 0..1 images [3, H_i, W_i] on the model's device -> per-image detections, in
        order: ``boxes`` [K, 4] x1y1x2y2 input pixels, ``scores`` [K], ``labels`` [K].

        Images of one size run together, each size alone: a batch pads every image to its
        largest one, and the padding changes an image's detections (GroupNorm statistics,
        convolutions at the border), so the AP would depend on the batch size and the order
        of the validation set, and disagree with ``tools/predict.py`` and the ONNX graph,
        which see each image with its own padding only."""
        model.eval()
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        preds: list[dict[str, Tensor]] = [{} for _ in images]
        for members in groups.values():
            for i, pred in zip(members, model([images[i] for i in members]).preds, strict=True):
                preds[i] = pred
        return preds

    def evaluate(
        self, model: nn.Module, batches: Iterable[Any], device: torch.device
    ) -> dict[str, Any]:
        ground_truth, detections = [], []
        for batch in batches:
            images, targets = self._to_device(batch, device)
            for img, t, p in zip(images, targets, self.detect(model, images), strict=True):
                image_id = int(t["image_id"])
                ground_truth.append(ground_truth_entry(image_id, img, t))
                detections.append(
                    dict(image_id=image_id, **{k: v.cpu().numpy() for k, v in p.items()})
                )
        metrics, self.last_precision = coco_evaluate(
            ground_truth, detections, self.class_names, self.category_ids
        )
        return metrics

    def visualize(
        self, model: nn.Module, val_set: Dataset, run_dir: Path, device: torch.device
    ) -> list[Path]:
        """``detections.png``: validation images with ground truth (green) and predictions
        (red); ``precision_recall.png``: per-class PR curves at IoU 0.5."""
        run_dir = Path(run_dir)
        if self.last_precision is None:
            loader = DataLoader(val_set, batch_size=4, collate_fn=collate)
            self.evaluate(model, loader, device)
        drawn = []
        for i in range(min(self.cfg.data.vis_images, len(val_set))):
            image, target = val_set[i]
            pred = self.detect(model, [image.to(device).float() / 255])[0]
            pred = {k: v.cpu() for k, v in pred.items()}
            drawn.append(draw_detections(image, pred, self.class_names, gt_boxes=target["boxes"]))
        paths = [save_grid(drawn, run_dir / "detections.png")] if drawn else []
        paths.append(
            plot_precision_recall(
                self.last_precision, self.class_names, run_dir / "precision_recall.png"
            )
        )
        return paths

    def predict(
        self,
        model: nn.Module,
        image_paths: Sequence[str | Path],
        out_dir: Path | None,
        device: torch.device,
        score_thresh: float = 0.3,
    ) -> list[dict[str, Any]]:
        """Prints how many detections score >= ``score_thresh`` per image; with ``out_dir``,
        draws them (``out_dir/<stem>.png``) and writes every detection to
        ``out_dir/predictions.json`` (boxes x1y1x2y2 pixels)."""
        results = []
        for path in image_paths:
            image = torch.from_numpy(read_image_rgb(path)).permute(2, 0, 1)
            pred = self.detect(model, [image.to(device).float() / 255])[0]
            pred = {k: v.cpu() for k, v in pred.items()}
            if out_dir is not None:
                save_image(
                    draw_detections(image, pred, self.class_names, score_thresh=score_thresh),
                    Path(out_dir) / f"{Path(path).stem}.png",
                )
            objects = [
                dict(
                    box=[round(v, 2) for v in b.tolist()],
                    label=self.class_names[int(c) - 1],
                    score=float(s),
                )
                for b, c, s in zip(pred["boxes"], pred["labels"], pred["scores"], strict=True)
            ]
            results.append(dict(image=str(path), detections=objects))
            shown = sum(o["score"] >= score_thresh for o in objects)
            print(f"{path}: {shown} detections >= {score_thresh}")
        write_predictions(out_dir, results)
        return results
