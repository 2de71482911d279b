"""What ``last.pt`` holds and how a trainer is put back into that state (``--resume``).

The LR schedule is a pure function of ``(step, elapsed_s)`` (``tasks.schedule``), so those
two numbers restore it. The sampler position is ``(epoch, batch_in_epoch)``: the resumed run
replays the same permutation and skips the micro-batches already seen. With world size 1,
``train.deterministic=true`` and ``num_workers=0`` on CPU, an interrupted and resumed run ends
with weights bit-identical to an uninterrupted one. Under DDP only rank 0's RNG state is
stored; other ranks reseed from ``(seed, rank, step)``.
"""

from __future__ import annotations

from typing import Any

import yaml

from tasks import checkpoint as ckpt
from tasks.config import ConfigError


def capture(trainer: Any) -> dict[str, Any]:
    """The resumable state of a ``Trainer`` (tensors and primitive containers only)."""
    return {
        "step": trainer.step,
        "epoch": trainer.epoch,
        "batch_in_epoch": trainer.batch_in_epoch,
        "elapsed_s": trainer.elapsed(),
        "best_metric": trainer.best_metric,
        "best_step": trainer.best_step,
        "world_size": trainer.dist.world_size,
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
        "rng": ckpt.rng_state(),
    }


# settings whose change would make the stored state wrong rather than merely a new recipe:
# the optimizer state has another layout; mid-epoch, the sampler position (micro-batches seen
# of a permutation drawn from the seed) would replay or skip images, and a grad_accum that
# does not divide it never reaches the epoch's end
FIXED_ON_RESUME = ("optimizer",)
FIXED_MID_EPOCH = ("batch_size", "grad_accum", "seed")


def check_recipe(trainer: Any, config_yaml: str, state: dict[str, Any]) -> None:
    """Refuse a ``--resume`` override (or edited config.yaml) that the saved state cannot
    follow; ``config_yaml`` is the config stored with ``last.safetensors``."""
    try:
        saved = (yaml.safe_load(config_yaml) or {}).get("train", {})
    except (yaml.YAMLError, AttributeError):
        return
    keys = FIXED_ON_RESUME + (FIXED_MID_EPOCH if state["batch_in_epoch"] else ())
    for key in keys:
        before, now = saved.get(key), getattr(trainer.cfg, key)
        if before is None or before == now:
            continue
        why = (
            "its optimizer state cannot be loaded into another optimizer"
            if key in FIXED_ON_RESUME
            else f"it stopped mid-epoch ({state['batch_in_epoch']} batches in), and a different "
            "value would replay or skip images of that epoch"
        )
        raise ConfigError(
            f"--resume {str(trainer.run_dir)!r}: train.{key} was {before!r} in the interrupted "
            f"run, now {now!r}; {why}: resume with train.{key}={before}"
        )


def restore(trainer: Any, state: dict[str, Any]) -> None:
    """Load ``last.safetensors`` weights and a ``capture``d state into ``trainer``."""
    if state["world_size"] != trainer.dist.world_size:
        raise ConfigError(
            f"{str(trainer.run_dir)!r} was trained with {state['world_size']} processes; "
            f"resume it with the same number (got {trainer.dist.world_size})"
        )
    weights, meta = ckpt.read_weights(trainer.run_dir / ckpt.LAST_WEIGHTS)
    if meta.get("step", str(state["step"])) != str(state["step"]):  # older runs: no step
        raise ConfigError(
            f"{str(trainer.run_dir)!r}: {ckpt.LAST_WEIGHTS} holds step {meta['step']} but "
            f"{ckpt.LAST_STATE} step {state['step']} (written by different saves: a copied "
            "file, or a run killed between the two); expected a matching pair"
        )
    check_recipe(trainer, meta.get("config", ""), state)
    ckpt.load_into(trainer.model, weights, trainer.run_dir / ckpt.LAST_WEIGHTS)
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"{str(trainer.run_dir / ckpt.LAST_STATE)!r}: its optimizer state does not fit the "
            f"optimizer built from the current config ({type(err).__name__}: {err}); resume "
            "with the train.* settings the run was started with"
        ) from None
    if state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None:
        if state["ema"] is None:
            raise ConfigError("train.ema was 0 in the interrupted run; resume with train.ema=0")
        trainer.ema.module.load_state_dict(state["ema"])
    trainer.step, trainer.epoch = state["step"], state["epoch"]
    trainer.batch_in_epoch = state["batch_in_epoch"]
    trainer.elapsed_before = state["elapsed_s"]
    trainer.best_metric, trainer.best_step = state["best_metric"], state["best_step"]
    trainer.last_saved_step = trainer.step
    ckpt.set_rng_state(state["rng"])
