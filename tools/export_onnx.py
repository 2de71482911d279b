"""Export a trained model to ONE ONNX file that does its own preprocessing, then check it.

    python tools/export_onnx.py RUN_DIR_OR_WEIGHTS --output model.onnx [--opset 17]
        [--dynamic] [--input-dtype uint8|float32] [--batch 1] [--fp16] [--int8 CALIB_DIR]
        [--val DIR] [--skip-parity]

After export, ONNX Runtime (CPU) and PyTorch run the same images (validation data, else
generated) at several sizes and batch sizes (one size without --dynamic); the largest
difference is printed and a failure exits with status 1 (a wrong option or input: 2).
--fp16 writes a float16 model (for the CUDA provider); --int8 a static QDQ int8 model
calibrated on CALIB_DIR, and --val DIR reports its accuracy and speed beside the fp32 model's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tasks import load_model
from tasks.cli import run_tool
from tasks.config import ConfigError
from tasks.export.metadata import build_metadata
from tasks.export.onnx_export import (
    DEFAULT_OPSET,
    INPUT_DTYPES,
    MAX_OPSET,
    MIN_OPSET,
    ExportError,
    export_onnx,
)
from tasks.export.parity import TOLERANCE, check_parity, parity_batches, parity_sizes
from tasks.export.spec import build_export
from tasks.inference import OnnxModel, UnloadableModelError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run folder or .safetensors weights")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--dynamic", action="store_true", help="free batch, height and width axes")
    p.add_argument("--input-dtype", default="uint8", choices=sorted(INPUT_DTYPES))
    p.add_argument("--batch", type=int, default=1, help="batch size of a static export")
    p.add_argument("--fp16", action="store_true", help="write a float16 model (CUDA provider)")
    p.add_argument("--int8", metavar="CALIB_DIR", help="write a static int8 (QDQ) model")
    p.add_argument("--val", metavar="DIR", help="validation folder for the int8 accuracy report")
    p.add_argument("--skip-parity", action="store_true", help="do not run the parity check")
    return p.parse_args(argv)


def run_parity(task, model, spec, path: Path, dynamic: bool, batch: int, opset: int) -> None:  # noqa: ANN001
    """Print one line per checked shape; raise ExportError when any differs too much."""
    try:
        onnx_model = OnnxModel(path, provider="cpu")
    except UnloadableModelError as err:  # valid ONNX that this ONNX Runtime cannot run
        import onnxruntime

        message = (f"ONNX Runtime {onnxruntime.__version__} cannot run the graph exported at "
                   f"--opset {opset} ({err.reason[:200]})")  # fmt: skip
        if opset == DEFAULT_OPSET:
            raise ExportError(message + "; nothing written") from None
        tested = f"the default --opset {DEFAULT_OPSET} is the tested one"
        raise ConfigError(f"{message}; {tested}") from None
    batches = parity_batches(task, parity_sizes(spec, dynamic, batch))
    rows = check_parity(task, model, spec, onnx_model, batches)
    for r in rows:
        verdict = "ok" if r.ok else "FAILED"
        print(f"parity {list(r.shape)}: max diff {r.max_diff:.2e} ({r.detail}) {verdict}")
    worst = max(r.max_diff for r in rows)
    print(f"parity: largest difference {worst:.2e} over {len(rows)} shapes (tolerance {TOLERANCE})")
    if not all(r.ok for r in rows):
        raise ExportError("ONNX Runtime and PyTorch disagree (lines above); nothing written")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        if args.fp16 and args.int8:
            raise ConfigError("choose one of --fp16 and --int8")
        if args.val and not args.int8:
            raise ConfigError(f"--val {args.val!r} is the int8 report's data; add --int8 CALIB_DIR")
        if args.int8:  # bad folders fail now, not after the export
            from tasks.export.evaluate import check_folder
            from tasks.export.quantize import calibration_files

            calibration_files(args.int8)
            if args.val:
                check_folder(args.val)
        if not MIN_OPSET <= args.opset <= MAX_OPSET:
            raise ConfigError(
                f"--opset {args.opset}: expected {MIN_OPSET}..{MAX_OPSET} (the default "
                f"{DEFAULT_OPSET} is the tested one)"
            )
        if args.batch < 1:
            raise ConfigError(f"--batch {args.batch}: expected 1 or more images per batch")
        output = Path(args.output)
        if output.is_dir():
            raise FileNotFoundError(f"--output {str(output)!r} is a folder; expected a file path")
        blocking = next((p for p in output.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise FileNotFoundError(
                f"--output {str(output)!r}: {str(blocking)!r} is a file; expected a folder"
            )
        # every file is made and checked in a folder beside --output, which only a model
        # that passed receives (a rename: an earlier good file is never half-replaced); made
        # first, so an unwritable --output fails before any work
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            workdir = tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-")
        except OSError as err:
            raise ConfigError(
                f"--output {str(output)!r}: cannot write in {str(output.parent)!r} "
                f"({err.strerror or err}); expected a writable folder"
            ) from None
        with workdir as tmp:
            model, task = load_model(args.checkpoint)
            if args.val:  # the wrong kind of data fails now, not after export and int8
                from tasks.export.evaluate import check_val_data

                check_val_data(task, args.val)
            spec = build_export(model, task)
            shape = [None, 3, None, None] if args.dynamic else [args.batch, 3, *spec.sample_hw]
            meta = build_metadata(task, model, spec, input_dtype=args.input_dtype,
                                  input_shape=shape)  # fmt: skip
            fp32 = Path(tmp) / "fp32.onnx"
            try:
                export_onnx(spec, fp32, metadata=meta, opset=args.opset, dynamic=args.dynamic,
                            input_dtype=args.input_dtype, batch=args.batch)  # fmt: skip
            except Exception as err:  # noqa: BLE001 - the exporter fails many ways per opset
                if args.opset == DEFAULT_OPSET:
                    raise
                raise ConfigError(
                    f"export at --opset {args.opset} failed ({str(err).splitlines()[0][:200]}); "
                    f"the default --opset {DEFAULT_OPSET} is the tested one"
                ) from None
            print(f"exported {task.name} model (opset {args.opset}, "
                  f"{'dynamic' if args.dynamic else 'static'} shape {shape})")  # fmt: skip
            if not args.skip_parity:
                run_parity(task, model, spec, fp32, args.dynamic, args.batch, args.opset)
            final = fp32
            if args.fp16 or args.int8:
                from tasks.export import quantize

                final = Path(tmp) / "final.onnx"
                if args.fp16:
                    quantize.to_fp16(fp32, final)
                else:
                    quantize.to_int8(fp32, final, args.int8)
                    if args.val:
                        quantize.report(task, fp32, final, args.val)
            final.replace(output)
        print(f"wrote {output}")
        return 0

    try:
        return run_tool(body)
    except (ExportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
