#!/usr/bin/env bash
# The CUDA paths, checked on a machine with an NVIDIA GPU (CI has none). Two phases, so the
# long one can be re-run alone:
#
#   bash bench/gpu_check.sh engine OUT_DIR   # AMP bf16/fp16 + channels_last, torchrun + nccl,
#                                            # each task's CLI training on CUDA, train throughput
#   bash bench/gpu_check.sh onnx OUT_DIR     # ORT CUDA provider: tests, CLI export + inference,
#                                            # IO binding, TensorRT fallback, bench/onnx_speed.py
#
# Needs torch with CUDA, onnxruntime-gpu and this project's dependencies importable (for
# example `make test`'s .venv, or PYTHONPATH). Each step's output goes to OUT_DIR/<phase>.log;
# a failing step is reported and the next one still runs. Figures: docs/benchmarks.md.
set -u
phase=${1:?usage: bench/gpu_check.sh engine|onnx OUT_DIR}
out=${2:?usage: bench/gpu_check.sh engine|onnx OUT_DIR}
runs=${RUNS_DIR:-/tmp/resvision-gpu-runs}
mkdir -p "$out" "$runs"
log="$out/$phase.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS CMD...: run CMD under a time limit, log it, report its status
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name: $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "=== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}

step environment 60 python -c "import sys, torch, onnxruntime as ort; print(sys.version.split()[0],
torch.__version__, torch.cuda.get_device_name(), 'ORT', ort.__version__,
ort.get_available_providers())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$log" 2>&1

case $phase in
engine)
  step amp_tests 300 python -m pytest -q -p no:cacheprovider tests/test_cuda.py -k engine
  step detect_torchrun_nccl_bf16 240 torchrun --standalone --nproc_per_node=1 tools/train.py \
    --task detect --out "$runs/detect" --quiet train.amp=bf16 train.max_minutes=0.5
  step segment_fp16 240 python tools/train.py --task segment --out "$runs/segment" --quiet \
    train.amp=fp16 train.max_minutes=0.5
  step classify_bf16 240 python tools/train.py --task classify --out "$runs/classify" --quiet \
    train.amp=bf16 train.max_minutes=0.5
  for task in detect segment classify; do
    echo "--- $task metrics.json" >>"$log"
    cat "$runs/$task/metrics.json" >>"$log" 2>&1
  done
  step train_throughput 240 python bench/train_throughput.py --steps 120 --warmup 20 \
    --rounds 2 --batch-size 512
  ;;
onnx)
  step ort_tests 400 python -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_inference.py tests/test_export_roundtrip.py
  if [ ! -f "$runs/detect/model.safetensors" ]; then
    step detect_train 240 python tools/train.py --task detect --out "$runs/detect" --quiet \
      train.max_minutes=0.3
  fi
  python -c "from PIL import Image; import numpy as np; Image.fromarray(np.random.default_rng(0)
.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save('$runs/image.png')"
  step export_detect 300 python tools/export_onnx.py "$runs/detect" --output "$runs/detect.onnx" \
    --dynamic
  step export_detect_fp16 300 python tools/export_onnx.py "$runs/detect" \
    --output "$runs/detect-fp16.onnx" --dynamic --fp16
  for provider in cuda tensorrt cpu; do
    step "infer_$provider" 120 python tools/infer_onnx.py "$runs/detect.onnx" "$runs/image.png" \
      --provider "$provider" --out "$runs/infer-$provider"
  done
  step infer_fp16_cuda 120 python tools/infer_onnx.py "$runs/detect-fp16.onnx" \
    "$runs/image.png" --provider cuda --out "$runs/infer-fp16"
  step onnx_speed 400 python bench/onnx_speed.py --device cuda --runs 30 \
    --out "$out/onnx_speed_cuda.json"
  ;;
*)
  echo "unknown phase $phase: expected engine or onnx" >&2
  exit 2
  ;;
esac
