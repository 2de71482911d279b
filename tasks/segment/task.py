"""Semantic segmentation: folder / VOC / COCO (or synthetic shapes) data, any registered
backbone at output stride 8 or 16, DeepLabV3 / DeepLabV3+ / PSPNet heads, mIoU.

Data flow: a source yields (uint8 image, int64 mask) -> checks (``masks.check_mask``) ->
albumentations crop/scale/flip/colour (``augment.py``) -> ``pad_collate`` pads a batch
(image 0, mask ignore_index) -> ``SegmentationModel`` (backbone + head [+ aux head]) ->
cross-entropy (+ Dice) on logits at input resolution. Evaluation runs whole images
(``infer.predict_logits``) into one confusion matrix (``metrics.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from backbones import create_backbone
from heads.segmentation import SEG_HEADS, FCNAuxHead, SegmentationLoss, SegmentationModel
from tasks.base import TASKS, Task, write_predictions
from tasks.config import ConfigError
from tasks.data import SYNTHETIC_VAL_SEED_OFFSET
from tasks.images import DataError, read_image_rgb
from tasks.plots import plot_confusion
from tasks.segment import draw
from tasks.segment.augment import build_transform
from tasks.segment.config import SegmentConfig
from tasks.segment.data import (
    SegmentationDataset,
    ShapesSource,
    SubsetSource,
    layout_of,
    open_source,
    pad_collate,
    scan_labels,
    voc_split_file,
)
from tasks.segment.infer import predict_logits
from tasks.segment.masks import palette_lookup
from tasks.segment.metrics import ConfusionMatrix

OUTPUT_STRIDES = (8, 16, 32)  # 32 = no dilation: cheapest, for CPU budgets (DeepLabV3+)


@TASKS.register("segment")
class SegmentTask(Task):
    """Per-pixel classification; ``primary_metric`` is mIoU over the validation set."""

    name = "segment"
    config_class = SegmentConfig
    primary_metric = "mIoU"
    writes_image_files = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        SEG_HEADS.get(cfg.model.head)  # unknown head -> "did you mean" now, not after loading data
        if cfg.model.output_stride not in OUTPUT_STRIDES:
            raise ConfigError(
                f"model.output_stride={cfg.model.output_stride}: expected 8 or 16 (dilated last "
                "stages keep segmentation features dense) or 32 (no dilation, cheapest)"
            )
        sizes = {
            "model.channels": cfg.model.channels,
            "data.max_size": cfg.data.max_size,
            "data.crop_size": cfg.data.crop_size,
            "data.eval_window": cfg.data.eval_window,
        }
        for key, value in sizes.items():
            if value < 0:
                raise ConfigError(f"{key}={value}: expected a size >= 0 (0 = off / default)")
        if not cfg.data.eval_scales or min(cfg.data.eval_scales) <= 0:
            raise ConfigError(
                f"data.eval_scales={list(cfg.data.eval_scales)}: expected one or more factors "
                "> 0, e.g. [1.0] (one scale) or [1.0, 1.25]"
            )
        if len(set(cfg.data.mask_values)) != len(cfg.data.mask_values):
            raise ConfigError(
                f"data.mask_values={list(cfg.data.mask_values)}: a value repeats (expected the "
                "stored value of each class, once)"
            )
        if not 0 <= cfg.data.ignore_index <= 65535:  # masks are PNGs: labels are 0..65535
            raise ConfigError(
                f"data.ignore_index={cfg.data.ignore_index}: expected a mask value in "
                "0..65535 (255 is the usual void label)"
            )
        self._matrix: Tensor | None = None  # confusion matrix of the last evaluate()

    # ---- data -------------------------------------------------------------------------
    def _sources(self) -> tuple[Any, Any]:
        d, seed = self.cfg.data, self.cfg.train.seed
        if d.train is None:
            size = d.synthetic_size
            return (
                ShapesSource(d.synthetic_train, seed=seed, size=size),
                ShapesSource(d.synthetic_val, seed=seed + SYNTHETIC_VAL_SEED_OFFSET, size=size),
            )
        opts = self._source_options()
        train = open_source(d.train, "train", **opts)
        if d.val is not None:
            return train, open_source(d.val, "val", **opts, class_names=train.class_names or None)
        if layout_of(Path(d.train), "train") == "voc":
            if voc_split_file(Path(d.train), "val").is_file():
                return train, open_source(d.train, "val", **opts)
            print(f"note: data.train={d.train!r} has no VOC val list; holding out "
                  f"data.val_fraction={d.val_fraction} of its train list")  # fmt: skip
        if len(train) < 2:
            raise DataError(
                f"data.train={d.train!r} has {len(train)} sample(s); cannot hold out a "
                "validation split (set data.val)"
            )
        order = np.random.default_rng(d.split_seed).permutation(len(train))
        n_val = min(len(train) - 1, max(1, round(d.val_fraction * len(train))))
        return SubsetSource(train, sorted(order[n_val:])), SubsetSource(
            train, sorted(order[:n_val])
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.cfg.data
        train, val = self._sources()
        k = self._label_space(train, val)
        crop = d.crop_size if d.train is not None else min(d.crop_size, d.synthetic_size)
        aug = dict(
            ignore_index=d.ignore_index, num_classes=k, crop_size=crop, max_size=d.max_size,
            scale=tuple(d.scale), hflip=d.hflip, vflip=d.vflip, color_jitter=d.color_jitter,
        )  # fmt: skip
        transform = build_transform(train=True, **aug)
        train_set = SegmentationDataset(
            train, transform=transform, num_classes=k, ignore_index=d.ignore_index,
            in_memory=d.in_memory,
        )  # fmt: skip
        return train_set, self._val_dataset(val, k)

    def build_val_dataset(self) -> Dataset:
        """The validation set alone (``tools/eval.py``, export checks): with ``data.in_memory``
        the training set would be decoded for nothing. With the classes known (a checkpoint
        loaded) and data.val given, the training data is not opened at all."""
        d = self.cfg.data
        if d.train is not None and d.val is not None and self.class_names:
            names = list(self.class_names)
            val = open_source(d.val, "val", **self._source_options(), class_names=names)
            return self._val_dataset(val, len(names))
        train, val = self._sources()
        return self._val_dataset(val, self._label_space(train, val))

    def _source_options(self) -> dict[str, Any]:
        d = self.cfg.data
        return dict(
            ignore_index=d.ignore_index,
            palette=[list(p) for p in d.palette] or None,
            mask_values=list(d.mask_values) or None,
        )

    def _label_space(self, train: Any, val: Any) -> int:
        """Number of classes; sets ``self.class_names``. data.num_classes, data.mask_values or
        data.palette give it (a palette's colours are its classes, whether or not the masks
        use them all); COCO and shapes know theirs; else data.class_names, else the masks are
        scanned. Each of those that is set must agree with it."""
        d = self.cfg.data
        palette_labels = [v for v in palette_lookup(d.palette).values() if v != d.ignore_index]
        k = (
            d.num_classes
            or len(d.mask_values)
            or (1 + max(palette_labels) if palette_labels else 0)
            or len(train.class_names)
            or len(d.class_names)
            or self._scan_label_space(train, val)
        )
        if d.class_names and len(d.class_names) != k:
            raise ConfigError(
                f"data.class_names has {len(d.class_names)} names but the label space has "
                f"{k} classes (data.num_classes={d.num_classes}, {len(d.mask_values)} "
                f"data.mask_values, {len(train.class_names)} named by the data); give one "
                "name per class"
            )
        if d.mask_values and len(d.mask_values) != k:
            raise ConfigError(
                f"data.mask_values lists {len(d.mask_values)} values but data.num_classes="
                f"{k}; give one value per class"
            )
        names = list(d.class_names) or train.class_names[:k]
        names += [str(i) for i in range(len(names), k)]
        repeated = sorted({n for n in names if names.count(n) > 1})  # COCO refuses its own
        if repeated:  # per-class IoU, pixel fractions and the ONNX metadata go by name
            labels = [i for i, n in enumerate(names) if n == repeated[0]]
            raise ConfigError(
                f"data.class_names={names} names classes {labels} {repeated[0]!r}; expected "
                "one name per class (metrics.json's per_class_iou would keep one of them)"
            )
        self.class_names = names
        return k

    def _scan_label_space(self, train: Any, val: Any) -> int:
        """1 + the largest label in the masks, refused when it is surely not what the user
        meant: one class (black-and-white masks whose white is the void value), or a space
        mostly empty (the void value is another number than data.ignore_index)."""
        ignore = self.cfg.data.ignore_index
        labels, void = scan_labels([train, val], ignore)
        k = 1 + (labels[-1] if labels else 0)
        found = f"the masks hold the values {labels[:10]}" + (f" and {ignore}" if void else "")
        if k == 1:
            raise DataError(
                f"data.train={self.cfg.data.train!r}: {found}: one class, nothing to segment "
                f"({ignore} is data.ignore_index, void). For black-and-white masks whose "
                f"foreground is {ignore} set data.mask_values=[0,{ignore}]; else set "
                "data.num_classes"
            )
        if k > 8 and k > 2 * len(labels):
            raise DataError(
                f"data.train={self.cfg.data.train!r}: {found}, so labels 0..{k - 1} would make "
                f"{k} classes, {k - len(labels)} of them without a pixel; set data.num_classes "
                f"to keep these numbers (e.g. {k} or the data set's full count), data.mask_values"
                f"={labels} to renumber them 0..{len(labels) - 1}, or data.ignore_index to the "
                "void value"
            )
        print(f"data.num_classes not set: {found} -> {k} classes")
        return k

    def _val_dataset(self, val: Any, k: int) -> SegmentationDataset:
        # Evaluation sees whole images at full resolution: predict_logits shrinks the image
        # to data.max_size and scores logits upsampled back against the full mask.
        d = self.cfg.data
        return SegmentationDataset(
            val, transform=build_transform(train=False, ignore_index=d.ignore_index, num_classes=k),
            num_classes=k, ignore_index=d.ignore_index, in_memory=d.in_memory,
        )  # fmt: skip

    def val_batch_size(self, val_set: SegmentationDataset) -> int:
        """``train.batch_size`` when every image of ``val_set`` has one size, else 1, so that
        evaluation scores the predictions ``tools/predict.py`` and the ONNX graph make (one
        image at a time, padded only to the output stride): in a batch padded to its largest
        image, the ASPP / pyramid pooling averages over the padding and the convolutions at
        the image's right and bottom edges see it, and flip TTA moves it to the left, so the
        mIoU would depend on which images share a batch. 1 with ``data.max_size`` or
        ``data.eval_scales`` too: each whole image must be resized by its own size."""
        d = self.cfg.data
        one_by_one = d.max_size or tuple(d.eval_scales) != (1.0,)
        one_by_one = one_by_one or len(val_set.image_sizes()) > 1  # headers only, no pixels
        return 1 if one_by_one else self.cfg.train.batch_size

    def collate(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        return pad_collate(samples, self.cfg.data.ignore_index)

    # ---- model ------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if not self.class_names:
            raise RuntimeError("call build_datasets() before build_model(): it sets class_names")
        m, d, k = self.cfg.model, self.cfg.data, len(self.class_names)
        backbone = create_backbone(m.backbone, output_stride=m.output_stride, norm_layer=m.norm)
        if m.class_weights and len(m.class_weights) != k:
            raise ConfigError(
                f"model.class_weights has {len(m.class_weights)} entries; expected {k} "
                "(one per class)"
            )
        weights = list(m.class_weights) or None
        loss = SegmentationLoss(
            ignore_index=d.ignore_index,
            class_weights=weights,
            dice_weight=m.dice_weight,
            lovasz_weight=m.lovasz_weight,
        )
        width = {}
        if m.channels:
            if "channels" not in inspect.signature(SEG_HEADS.get(m.head)).parameters:
                raise ConfigError(
                    f"model.channels={m.channels} is not used by model.head={m.head!r} (its "
                    "width is torchvision's); set it with deeplabv3plus or pspnet, or use 0"
                )
            width["channels"] = m.channels
        head = SEG_HEADS.create(
            m.head, feature_info=backbone.feature_info, num_classes=k, loss=loss, **width
        )
        aux = None
        if m.aux_loss:
            aux_loss = SegmentationLoss(ignore_index=d.ignore_index, class_weights=weights)
            feature = backbone.feature_info[-2].name
            aux = FCNAuxHead(backbone.feature_info, k, feature=feature, loss=aux_loss)
        return SegmentationModel(backbone, head, aux, aux_weight=m.aux_weight)

    # ---- train / eval -----------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, masks = (t.to(device, non_blocking=True) for t in batch)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = model(images, masks)
        return {"loss": sum(out.losses.values()), **out.losses}

    def predict_logits(self, model: nn.Module, images: Tensor) -> Tensor:
        """Logits Tensor[B, K, H, W] for normalised images of any size (see ``infer.py``)."""
        d = self.cfg.data
        multiple = max(f.stride for f in model.backbone.feature_info)
        return predict_logits(
            model, images, multiple=multiple, window=d.eval_window, flip=d.eval_flip,
            max_size=d.max_size, scales=tuple(d.eval_scales),
        ).float()  # fmt: skip

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, batches: Iterable[Any], device: torch.device
    ) -> dict[str, Any]:
        d = self.cfg.data
        was_training = model.training
        model.eval()
        cm = ConfusionMatrix(len(self.class_names), d.ignore_index)
        loss_sum, pixels = 0.0, 0
        for images, masks in batches:
            images, masks = images.to(device), masks.to(device)
            logits = self.predict_logits(model, images)
            loss_sum += float(
                F.cross_entropy(logits, masks, ignore_index=d.ignore_index, reduction="sum")
            )
            pixels += int((masks != d.ignore_index).sum())
            cm.update(logits.argmax(1), masks)
        model.train(was_training)
        if pixels == 0:
            raise DataError(
                f"the validation set (data.val={d.val!r}) has no labelled pixel: every mask is "
                f"data.ignore_index={d.ignore_index}, so there is nothing to score"
            )
        self._matrix = cm.matrix.clone()
        return {**cm.compute(self.class_names), "loss": loss_sum / pixels}

    def visualize(
        self, model: nn.Module, val_set: Dataset, run_dir: Path, device: torch.device
    ) -> list[Path]:
        """``predictions.png`` (rows: image | ground truth | prediction for up to 6 validation
        images) and ``confusion_matrix.png`` (from the last ``evaluate``)."""
        run_dir = Path(run_dir)
        colours = draw.palette(len(self.class_names), self.cfg.data.ignore_index)
        was_training = model.training
        model.eval()
        rows = []
        for i in range(min(6, len(val_set))):
            image, mask = val_set.raw(i)
            x, _ = val_set.transform(image, mask)
            with torch.no_grad():
                logits = self.predict_logits(model, x[None].to(device))
            pred = logits[0].argmax(0).cpu().numpy()
            rows.append(
                [image, draw.overlay(image, mask, colours), draw.overlay(image, pred, colours)]
            )
        model.train(was_training)
        paths = [draw.save_grid(rows, run_dir / "predictions.png")] if rows else []
        if self._matrix is not None:
            paths.append(
                plot_confusion(self._matrix, self.class_names, run_dir / "confusion_matrix.png")
            )
        return paths

    def predict(
        self,
        model: nn.Module,
        image_paths: Sequence[str | Path],
        out_dir: Path | None,
        device: torch.device,
    ) -> list[dict[str, Any]]:
        """Prints each image's class pixel fractions; with ``out_dir``, writes
        ``<stem>_mask.png`` (pixel value = class index, see ``draw.save_prediction``) and
        ``<stem>_overlay.png`` per image there, plus ``predictions.json``."""
        d = self.cfg.data
        transform = build_transform(
            train=False, ignore_index=d.ignore_index, num_classes=len(self.class_names)
        )
        # the colours tools/infer_onnx.py draws with: the ONNX metadata has no ignore_index,
        # and predictions never hold it (with it, data.ignore_index=1000 made this mask a
        # 16-bit greyscale PNG and the ONNX one a palette PNG)
        colours = draw.palette(len(self.class_names))
        model.eval()
        results = []
        for path in map(Path, image_paths):
            image = read_image_rgb(path)
            x, _ = transform(image, np.zeros(image.shape[:2], dtype=np.int64))
            with torch.no_grad():
                logits = self.predict_logits(model, x[None].to(device))
            pred = logits[0].argmax(0).cpu().numpy()
            results.append(
                draw.report_prediction(path, pred, self.class_names, colours, out_dir, image)
            )
        write_predictions(out_dir, results)
        return results
