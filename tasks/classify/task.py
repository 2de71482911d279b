"""Image classification: ImageFolder (or synthetic) data, any backbone, top-1/top-5.

Data flow: uint8 images in memory -> DataLoader batches ``(uint8 [B, 3, S, S], int64 [B])``
-> ``train_step`` moves them to the device and augments the whole batch there
(``augment.py``), optionally mixes them (timm ``Mixup``) -> ``Classifier`` normalises,
runs backbone + head -> cross-entropy with label smoothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from backbones import TIMM_PREFIX, create_backbone
from heads.classification import ClassifierHead
from tasks.base import TASKS, Task, write_predictions
from tasks.classify.augment import PRESETS, augment_batch
from tasks.classify.config import ClassifyConfig
from tasks.classify.data import (
    InMemoryImages,
    load_image_folder,
    stratified_split,
    synthetic_images,
)
from tasks.classify.metrics import confusion_matrix, topk_correct
from tasks.classify.model import Classifier, tta_logits
from tasks.config import ConfigError
from tasks.data import SYNTHETIC_VAL_SEED_OFFSET
from tasks.images import DataError, read_image_rgb
from tasks.plots import plot_confusion


def progressive_sizes(schedule: list[list[float]], image_size: int) -> list[tuple[float, int]]:
    """``data.progressive`` checked: ``[(start fraction, size), ...]`` starting at 0, fractions
    increasing in [0, 1), sizes in 1..image_size; ``[]`` -> ``[(0.0, image_size)]``."""
    if not schedule:
        return [(0.0, image_size)]
    error = ConfigError(
        f"data.progressive={list(schedule)}: expected [[fraction, size], ...] with fractions "
        f"rising from 0 (below 1) and whole sizes in 1..{image_size} (data.image_size)"
    )
    steps = []
    for item in schedule:
        if len(item) != 2 or not 0 <= item[0] < 1 or item[1] not in range(1, image_size + 1):
            raise error
        steps.append((float(item[0]), int(item[1])))
    starts = [start for start, _ in steps]
    if starts[0] != 0 or starts != sorted(set(starts)):
        raise error
    return steps


def check_splits(train: InMemoryImages, val: InMemoryImages, d: Any) -> None:
    """Refuse, before training, what would waste it: fewer than two classes, a class with no
    training image (all its files unreadable, or all held out), or an empty validation set."""
    where = f"data.train={d.train!r}"
    if len(train.class_names) < 2:
        raise DataError(
            f"{where} has {len(train.class_names)} class folder ({train.class_names}); "
            "classification needs two or more"
        )
    counts = torch.bincount(train.labels, minlength=len(train.class_names)).tolist()
    empty = [name for name, n in zip(train.class_names, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"{where}: class(es) {empty} have no training image left (unreadable files "
            "skipped, or every image held out); add images or remove the folder(s)"
        )
    if len(val) == 0:
        source = (
            f"data.val={d.val!r}"
            if d.val is not None
            else (
                f"the hold-out (data.val_fraction={d.val_fraction}; classes of one image give none)"
            )
        )
        raise DataError(f"{source} has no readable image to validate on; set data.val")


@TASKS.register("classify")
class ClassifyTask(Task):
    """Single-label image classification; ``primary_metric`` is held-out top-1 (a fraction)."""

    name = "classify"
    config_class = ClassifyConfig
    primary_metric = "top1"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.data.augment not in PRESETS:
            raise ConfigError(
                f"data.augment={cfg.data.augment!r}: expected one of {', '.join(PRESETS)}"
            )
        if cfg.data.image_size < 8:
            raise ConfigError(
                f"data.image_size={cfg.data.image_size}: expected at least 8 pixels (the nets "
                "downsample by 8 or more)"
            )
        if not 0 <= cfg.model.dropout < 1:
            raise ConfigError(
                f"model.dropout={cfg.model.dropout}: expected a probability in [0, 1)"
            )
        for key in ("mean", "std"):
            values = list(getattr(cfg.model, key))
            if len(values) != 3 or (key == "std" and min(values) <= 0):
                raise ConfigError(
                    f"model.{key}={values}: expected three per-channel values (R, G, B, in "
                    "0..255 pixel units)" + (", all > 0" if key == "std" else "")
                )
        if not 0 <= cfg.data.tta_translate < cfg.data.image_size // 2:
            raise ConfigError(
                f"data.tta_translate={cfg.data.tta_translate!r}: expected pixels from 0 (off) "
                f"to below half of data.image_size={cfg.data.image_size}"
            )
        self._mixup = None
        self.skipped: list[Path] = []  # unreadable files left out (data.skip_bad=true)
        self._sizes = progressive_sizes(cfg.data.progressive, cfg.data.image_size)

    # ---- data -------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.cfg.data
        if d.train is None:
            return self._synthetic()
        full = load_image_folder(d.train, d.image_size, field="data.train", **self._load_options())
        self.skipped = list(full.skipped)
        if d.val is None:
            train_idx, val_idx = stratified_split(full.labels, d.val_fraction, d.split_seed)
            train, val = full.subset(train_idx), full.subset(val_idx)
        else:
            train, val = full, self._val_folder(full.class_names)
        if self.skipped:
            names = [str(p) for p in self.skipped[:3]] + ["..."] * (len(self.skipped) > 3)
            print(
                f"classify: skipped {len(self.skipped)} unreadable image(s) "
                f"(data.skip_bad=true): {', '.join(names)}"
            )
        check_splits(train, val, d)
        self.class_names = list(train.class_names)
        return train, val

    def build_val_dataset(self) -> Dataset:
        """data.val alone when the classes are known (``tools/eval.py`` after loading a
        checkpoint): the training folder is neither needed nor decoded."""
        d = self.cfg.data
        if d.train is None or d.val is None or not self.class_names:
            return self.build_datasets()[1]
        self.skipped = []
        return self._val_folder(list(self.class_names))

    def _load_options(self) -> dict[str, Any]:
        d = self.cfg.data
        return dict(skip_bad=d.skip_bad, workers=d.decode_workers, cache_dir=d.cache_dir or "")

    def _val_folder(self, class_names: list[str]) -> InMemoryImages:
        """data.val decoded, its labels renumbered to ``class_names`` (the training classes;
        a val folder may lack some, not add any)."""
        d = self.cfg.data
        val = load_image_folder(d.val, d.image_size, field="data.val", **self._load_options())
        self.skipped += val.skipped
        missing = sorted(set(val.class_names) - set(class_names))
        if missing:
            raise DataError(
                f"data.val={d.val!r} has class folder(s) {missing} that data.train="
                f"{d.train!r} lacks (expected the val classes to be a subset of {class_names})"
            )
        remap = torch.tensor([class_names.index(c) for c in val.class_names])
        return InMemoryImages(val.images, remap[val.labels], class_names)

    def _synthetic(self) -> tuple[Dataset, Dataset]:
        d, seed = self.cfg.data, self.cfg.train.seed
        k = d.synthetic_classes
        names = [f"class{i}" for i in range(k)]
        tr = synthetic_images(k, d.synthetic_train_per_class, d.image_size, seed)
        val_seed = seed + SYNTHETIC_VAL_SEED_OFFSET
        va = synthetic_images(k, d.synthetic_val_per_class, d.image_size, val_seed)
        self.class_names = names
        return InMemoryImages(*tr, names), InMemoryImages(*va, names)

    # ---- model ------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if not self.class_names:
            raise RuntimeError("call build_datasets() before build_model(): it sets class_names")
        m = self.cfg.model
        options = dict(norm_layer=m.norm, drop_path_rate=m.drop_path_rate)
        if not m.backbone.startswith(TIMM_PREFIX):  # timm's ResNets zero-init themselves
            options["zero_init_residual"] = m.zero_init_residual  # (zero_init_last); others lack it
        backbone = create_backbone(m.backbone, **options)
        last = backbone.feature_info[-1]
        head = ClassifierHead(
            last.channels,
            len(self.class_names),
            feature=last.name,
            pool=m.pool,
            dropout=m.dropout,
            label_smoothing=m.label_smoothing,
            scale=m.logit_scale,
        )
        return Classifier(backbone, head, m.mean, m.std)

    # ---- train / eval -----------------------------------------------------------------
    def _to_device(self, batch: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(device, non_blocking=True)

    def _mixer(self) -> Any:
        d = self.cfg.data
        if self._mixup is None and (d.mixup > 0 or d.cutmix > 0):
            from timm.data import Mixup

            self._mixup = Mixup(
                mixup_alpha=d.mixup,
                cutmix_alpha=d.cutmix,
                label_smoothing=self.cfg.model.label_smoothing,
                num_classes=len(self.class_names),
            )
        return self._mixup

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, labels = self._to_device(batch, device)
        d = self.cfg.data
        x = augment_batch(
            images, d.augment, pad=d.pad, size=d.image_size, scale=tuple(d.crop_scale)
        ).float()
        size = next(size for start, size in reversed(self._sizes) if self.progress >= start)
        if size != x.shape[-1]:  # progressive resizing: cheaper steps early in the run
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        mixer = self._mixer()
        if mixer is not None and len(x) % 2 == 0:
            x, labels = mixer(x, labels)
        out = model(x, labels)
        return {"loss": sum(out.losses.values()), **out.losses}

    @torch.no_grad()
    def predict_logits(self, model: nn.Module, images: Tensor) -> Tensor:
        """Logits ``[B, K]`` for a prepared batch, with the test-time views of
        ``data.tta_flip`` and ``data.tta_translate``."""
        d = self.cfg.data
        return tta_logits(model, images, d.tta_flip, d.tta_translate)

    def evaluate(
        self, model: nn.Module, batches: Iterable[Any], device: torch.device
    ) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        n, loss_sum, hits = 0, 0.0, {1: 0, 5: 0}
        for batch in batches:
            images, labels = self._to_device(batch, device)
            logits = self.predict_logits(model, images)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            for k, v in topk_correct(logits, labels, (1, 5)).items():
                hits[k] += v
            n += len(labels)
        model.train(was_training)
        if n == 0:
            raise ValueError("evaluate() got an empty validation set")
        return {"top1": hits[1] / n, "top5": hits[5] / n, "loss": loss_sum / n}

    def visualize(
        self, model: nn.Module, val_set: Dataset, run_dir: Path, device: torch.device
    ) -> list[Path]:
        was_training = model.training
        model.eval()
        preds, targets = [], []
        for batch in DataLoader(val_set, batch_size=256):
            images, labels = self._to_device(batch, device)
            preds.append(self.predict_logits(model, images).argmax(1).cpu())
            targets.append(labels.cpu())
        model.train(was_training)
        cm = confusion_matrix(torch.cat(preds), torch.cat(targets), len(self.class_names))
        acc = float(cm.diag().sum()) / max(int(cm.sum()), 1)
        path = Path(run_dir) / "confusion_matrix.png"
        title = f"confusion matrix, top-1 {acc:.2%} on {int(cm.sum())} images"
        return [plot_confusion(cm, self.class_names, path, title)]

    def predict(
        self,
        model: nn.Module,
        image_paths: Sequence[str | Path],
        out_dir: Path | None,
        device: torch.device,
        top_k: int = 5,
    ) -> list[dict[str, Any]]:
        """Top-k classes per image with probabilities: printed one line per image, and
        written to ``out_dir/predictions.json`` when ``out_dir`` is given."""
        size = self.cfg.data.image_size
        k = min(top_k, len(self.class_names))
        model.eval()
        results = []
        for path in image_paths:
            image = torch.from_numpy(read_image_rgb(path, size)).permute(2, 0, 1)[None]
            probs = self.predict_logits(model, image.to(device)).softmax(1)[0].cpu()
            p, idx = probs.topk(k)
            top = [
                {"class": self.class_names[i], "index": int(i), "prob": float(q)}
                for q, i in zip(p.tolist(), idx.tolist(), strict=True)
            ]
            results.append({"image": str(path), "top": top})
            shown = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top)
            print(f"{path}: {shown}")
        write_predictions(out_dir, results)
        return results
