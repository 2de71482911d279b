"""Train a task with the shared engine.

    python tools/train.py --task classify [--config configs/classify/X.yaml] [--out RUN_DIR]
                          [--quiet] [--print-config] [key=value ...]
    python tools/train.py --resume RUN_DIR [key=value ...]
    torchrun --nproc_per_node=2 tools/train.py --task classify ...

Overrides reach every config key (``model.backbone=resnet56 train.max_minutes=10``); the
merged config is saved as RUN_DIR/config.yaml. Default RUN_DIR: ``runs/<task>-<timestamp>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tasks import TASKS, checkpoint, distributed
from tasks.cli import run_tool
from tasks.config import ConfigError, config_to_yaml, load_config
from tasks.engine import Trainer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", help=f"one of {', '.join(TASKS.list())}")
    parser.add_argument("--config", help="YAML recipe, e.g. configs/classify/cifar10.yaml")
    parser.add_argument("--out", help="run folder (default runs/<task>-<timestamp>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--quiet", action="store_true", help="no console output")
    parser.add_argument("--print-config", action="store_true", help="print merged YAML, exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)  # key=value before and after options


def resume_source(run_dir: Path, task: str | None) -> tuple[str, Path]:
    """(task name, config.yaml) of an interrupted run."""
    if not run_dir.is_dir():
        what = "is a file, not a run folder" if run_dir.exists() else "no such run folder"
        raise FileNotFoundError(f"--resume {str(run_dir)!r}: {what}")
    if not (run_dir / checkpoint.LAST_WEIGHTS).is_file():
        stopped = (run_dir / checkpoint.CONFIG_FILE).is_file()
        raise FileNotFoundError(
            f"--resume {str(run_dir)!r}: no {checkpoint.LAST_WEIGHTS} there, so not a resumable"
            " run folder (a run writes it at its first checkpoint"
            + ("; this one stopped before it: start it again with --out" if stopped else "")
            + ")"
        )
    _, meta = checkpoint.read_weights(run_dir / checkpoint.LAST_WEIGHTS)
    checkpoint.check_metadata(meta, run_dir / checkpoint.LAST_WEIGHTS)
    if task is not None and task != meta["task"]:
        raise ConfigError(f"--resume {str(run_dir)!r} is a {meta['task']!r} run, not {task!r}")
    return meta["task"], run_dir / checkpoint.CONFIG_FILE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        if args.resume and (args.config or args.out):
            raise ConfigError(
                "--resume takes its config and folder from RUN_DIR; drop --config/--out"
            )
        if args.resume:
            task_name, config_path = resume_source(Path(args.resume), args.task)
        elif args.task:
            task_name, config_path = args.task, args.config
        else:
            raise ConfigError(f"--task is required (one of {', '.join(TASKS.list())})")
        task_cls = TASKS.get(task_name)
        cfg = load_config(task_cls.config_class, config_path, args.overrides)
        if args.print_config:
            print(config_to_yaml(cfg), end="")
            return 0
        info = distributed.init_distributed(cfg.train.device)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.resume or args.out or f"runs/{task_name}-{stamp}"
        run_dir = distributed.broadcast_object(info, run_dir)
        trainer = Trainer(task_cls(cfg), run_dir, resume=bool(args.resume), quiet=args.quiet)
        trainer.train()
        return 0

    return run_tool(body)


if __name__ == "__main__":
    raise SystemExit(main())
