#!/bin/bash
# nwc against llama.cpp's low-bit quantizers on Qwen2.5-Coder-1.5B-Instruct, where llama.cpp's
# 256-value super-blocks fit every matrix (SmolLM2's 576-wide rows do not: docs/llm-rival.md),
# scored by llama.cpp's own llama-perplexity on the same text. Results: docs/llm-rival.md.
#
#   scripts/rival_qwen2.sh llamacpp [TYPES...]   # reference, imatrix (once), each type: rate, perplexity
#   scripts/rival_qwen2.sh nwc CODEC NOMINAL     # nwc|tcq|ecsq, levels + LDLQ, layer by layer
#
# Needs: cargo xtask fetch qwen2 canterbury; cargo build --release -p nwc-cli; llama.cpp's tools
# (built by `cargo xtask bench-rival` into target/llama.cpp, or NWC_LLAMACPP_BIN). Rates are file
# bytes × 8 / 1,777,088,000 (nwc's parameter count) on both sides. Calibration (nwc's Hessians
# and llama.cpp's importance matrix alike): 16 × 512 tokens of Canterbury lcet10 + plrabn12;
# evaluation: llama-perplexity -c 512 --chunks 8 on alice29. nwc's Llama path takes its rate
# as the codec's nominal one (no search to the exact rate layer by layer), so pick NOMINAL to
# land at or below the llama.cpp file it is compared with.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${NWC_LLAMACPP_BIN:-target/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
M=.data/qwen2/qwen2.5-coder-1.5b-instruct.gguf
D=${OUT:-target/rival-qwen2}
N=1777088000
E=.data/canterbury/alice29.txt
mkdir -p "$D"
cat .data/canterbury/lcet10.txt .data/canterbury/plrabn12.txt > "$D/calib.txt"
bits() { python3 -c "print(f'{$1 * 8 / $N:.4f}')"; }
ppl() {
  "$B/llama-perplexity" -m "$1" -f $E -c 512 --chunks 8 -t "$(nproc)" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
}
case "${1:-}" in
llamacpp)
  shift
  t=$(date +%s); s=$(stat -c %s $M)
  echo "reference: $s bytes, $(bits "$s") bits/param, ppl $(ppl $M) ($(( $(date +%s) - t )) s)"
  if [ ! -s "$D/imatrix.dat" ]; then
    t=$(date +%s)
    "$B/llama-imatrix" -m $M -f "$D/calib.txt" -o "$D/imatrix.dat.tmp" -c 512 --chunks 16 \
      -t "$(nproc)" --no-ppl > "$D/imatrix.log" 2>&1
    mv "$D/imatrix.dat.tmp" "$D/imatrix.dat"
    echo "imatrix: $(( $(date +%s) - t )) s"
  fi
  for T in ${*:-IQ2_XS Q2_K IQ3_XXS Q3_K_S Q3_K_M IQ4_XS}; do
    t=$(date +%s)
    "$B/llama-quantize" --allow-requantize --imatrix "$D/imatrix.dat" $M "$D/$T.gguf" "$T" \
      "$(nproc)" > "$D/quant-$T.log" 2>&1
    s=$(stat -c %s "$D/$T.gguf")
    echo "llama.cpp $T + imatrix: $s bytes, $(bits "$s") bits/param, ppl $(ppl "$D/$T.gguf") ($(( $(date +%s) - t )) s)"
    rm -f "$D/$T.gguf"
  done
  ;;
nwc)
  C=$2; b=$3; o="$D/$C-$b"
  t=$(date +%s)
  RUST_LOG=nwc=info target/release/nwc compress $M -o "$o.nwc" --bits "$b" --codec "$C" \
    --calib "$D/calib.txt" --mode ldlq --ctx 512 --calib-windows 16 > "$o.log" 2>&1
  tc=$(( $(date +%s) - t ))
  target/release/nwc decompress "$o.nwc" -o "$o.gguf" --dtype f16 >> "$o.log" 2>&1
  s=$(stat -c %s "$o.nwc")
  echo "nwc $C nominal $b, levels + LDLQ: $s bytes, $(bits "$s") bits/param, ppl $(ppl "$o.gguf") (compress $tc s, total $(( $(date +%s) - t )) s)"
  rm -f "$o.gguf"
  ;;
*)
  sed -n '2,16p' "$0"; exit 2
  ;;
esac
