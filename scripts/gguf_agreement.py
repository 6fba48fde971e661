"""Checks a GGUF file written by `nwc decompress` with llama.cpp, an implementation nobody here
wrote: llama.cpp (llama-cpp-python) must load the file unchanged and its perplexity on a text
must agree with the perplexity nwc computes on the .nwc itself (within 0.5 %).

Both sides score the same way: the text's first WINDOWS non-overlapping windows of CTX tokens,
each window's first token unscored (nwc's `layerwise_perplexity`). llama.cpp tokenizes the text
with the vocabulary and pre-tokenizer stored in the GGUF; its token count must equal nwc's.

Needs: pip install llama-cpp-python numpy (builds llama.cpp from source: cmake and a C++
compiler, ~15 min on 2 cores).

Run (the command docs/llm-export.md records):
    N=target/release/nwc
    $N compress .data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -o target/gguf-check/smollm2.nwc \\
        --bits 4 --calib .data/canterbury/lcet10.txt --ctx 512 --calib-windows 16
    $N decompress target/gguf-check/smollm2.nwc -o target/gguf-check/smollm2-f32.gguf --dtype f32
    $N eval target/gguf-check/smollm2.nwc --text .data/canterbury/alice29.txt --ctx 512 \\
        --windows 8 --json > target/gguf-check/nwc-eval.json
    python3 scripts/gguf_agreement.py target/gguf-check/smollm2-f32.gguf \\
        .data/canterbury/alice29.txt target/gguf-check/nwc-eval.json
"""
import json
import os
import sys

import numpy as np

from agreement import verdict


def main():
    gguf, text_path, nwc_json = sys.argv[1:4]
    nwc = json.load(open(nwc_json))
    ctx, windows = nwc["ctx"], nwc["windows"]
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=ctx, n_batch=ctx, logits_all=True,
                n_threads=os.cpu_count(), verbose=False)
    text = open(text_path, "rb").read().decode("utf-8", errors="replace")
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    total, scored = 0.0, 0
    for w in range(windows):
        win = ids[w * ctx:(w + 1) * ctx]
        if len(win) < ctx:
            break
        llm.reset()
        llm.eval(win[:-1])
        logits = np.array(llm.scores[: ctx - 1], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        total -= float(sum(logp[i, win[i + 1]] for i in range(ctx - 1)))
        scored += ctx - 1
    verdict("llama.cpp", total, scored, nwc, text_path)


if __name__ == "__main__":
    main()
