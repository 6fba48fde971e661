"""Writes crates/nwc-llm/tests/fixtures/qwen2_logits.json: Qwen2.5-Coder-1.5B's logits on a short
text as llama.cpp computes them, for crates/nwc-llm/tests/qwen2.rs.

llama.cpp runs quantized matrices with 8-bit-quantized activations, which would blur the
comparison, so this script first writes an F32 copy of the GGUF (every tensor dequantized by
gguf-py, llama.cpp's own Python package; metadata and tokenizer copied unchanged) and runs
llama.cpp (llama-cpp-python) on that copy. The quantized original is run too, and its distance
from the F32 run is stored for reference.

Needs: pip install gguf llama-cpp-python numpy (llama-cpp-python builds llama.cpp: cmake and a
C++ compiler, ~15 min on 2 cores).

Run: python3 scripts/qwen2_fixture.py .data/qwen2/qwen2.5-coder-1.5b-instruct.gguf \
         /tmp/qwen2-f32.gguf crates/nwc-llm/tests/fixtures/qwen2_logits.json
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGUFValueType
from gguf.quants import dequantize

TEXT = (
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n"
    "\n"
    "Alice was beginning to get very tired of sitting by her sister on the bank, "
    "and of having nothing to do: once or twice she had peeped into the book."
)
TOP = 8
PROBES = [0, 1, 13, 220, 1000, 5000, 20000, 50000, 100000, 151000]


def write_f32_copy(src, dst):
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        value = f.contents()
        if f.name == "general.file_type":
            value = 0  # all F32
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(f.name, value, f.types[0], sub_type=sub)
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
        w.add_tensor(t.name, values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(path, toks=None):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=256, n_batch=256, logits_all=True, n_threads=os.cpu_count(),
                verbose=False)
    if toks is None:
        toks = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    llm.eval(toks)
    return toks, np.array(llm.scores[: len(toks)], dtype=np.float64)


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    src, f32_path, out = sys.argv[1:4]
    if not os.path.exists(f32_path):
        write_f32_copy(src, f32_path)
    toks, logits = run(f32_path)
    _, qlogits = run(src, toks)
    lp = log_softmax(logits)
    nll = [-float(lp[i, toks[i + 1]]) for i in range(len(toks) - 1)]
    positions = []
    for i in range(len(toks)):
        top = np.argsort(-logits[i])[:TOP]
        ids = [int(v) for v in top] + [p for p in PROBES if p not in top]
        positions.append({"ids": ids, "logits": [float(logits[i, j]) for j in ids]})
    fixture = {
        "source": "llama.cpp " + __import__("llama_cpp").__version__
        + " (llama-cpp-python) on an F32 copy of qwen2.5-coder-1.5b-instruct.gguf dequantized by gguf-py",
        "text": TEXT,
        "tokens": [int(t) for t in toks],
        "positions": positions,
        "nll": nll,
        "mean_nll": float(np.mean(nll)),
        "quantized_run_max_abs_logit_diff": float(np.abs(qlogits - logits).max()),
        "quantized_run_mean_nll": float(np.mean(
            [-log_softmax(qlogits)[i, toks[i + 1]] for i in range(len(toks) - 1)])),
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
    print(len(toks), "tokens; mean NLL", fixture["mean_nll"], "quantized run",
          fixture["quantized_run_mean_nll"], "max |Δlogit|", fixture["quantized_run_max_abs_logit_diff"])


if __name__ == "__main__":
    main()
