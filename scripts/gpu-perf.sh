#!/usr/bin/env bash
# GPU throughput of the learned codec's decoder (burn-cuda) beside the CPU backend, for
# docs/perf-gpu.md. Run on a GPU machine from the repository root, with DIR holding what was
# built and made on a CPU machine (the GPU machine needs no toolchain and no network):
#
#   cargo build --release -p nwc --features cuda --example gpu_decode
#   mkdir -p target/gpu && strip -o target/gpu/gpu_decode target/release/examples/gpu_decode
#   xz target/gpu/gpu_decode          # 28 MB → 4.4 MB: a device call carries at most 64 MiB
#   nwc compress .data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -o target/gpu/smollm2-nwc.nwc --bits 1.5
#   # optional, for a machine without the CUDA runtime compiler: libnvrtc.so.12 and
#   # libnvrtc-builtins.so.12.9 from PyPI's nvidia-cuda-nvrtc-cu12, as DIR/nvrtc.tar.xz
#   bash scripts/gpu-perf.sh target/gpu
set -euo pipefail
dir=${1:-target/gpu}
if [ ! -x "$dir/gpu_decode" ] && [ -f "$dir/gpu_decode.xz" ]; then
    xz -dc "$dir/gpu_decode.xz" > "$dir/gpu_decode" && chmod +x "$dir/gpu_decode"
fi
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "cpus: $(nproc)"
if ! ldconfig -p | grep -q libnvrtc.so; then
    found=$(ls /usr/local/cuda*/lib64/libnvrtc.so* 2>/dev/null | head -1 || true)
    if [ -n "$found" ]; then
        export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    elif [ -f "$dir/nvrtc.tar.xz" ]; then
        mkdir -p "$dir/nvrtc"
        tar xJf "$dir/nvrtc.tar.xz" -C "$dir/nvrtc"
        ln -sf libnvrtc.so.12 "$dir/nvrtc/libnvrtc.so"
        export LD_LIBRARY_PATH="$PWD/$dir/nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
fi
echo "nvrtc: ${LD_LIBRARY_PATH:-system}"
echo "== decode (learned codec; GPU = burn-cuda, CPU = NdArray with the plain-f32 refiner)"
for threads in ${THREADS:-$(nproc)}; do
    echo "-- CPU threads: $threads"
    RAYON_NUM_THREADS=$threads "$dir/gpu_decode" "$dir"/*.nwc
done
