"""Writes crates/nwc-tensor/tests/fixtures/kquants.json: for each block-quantized type in the
Qwen2.5-Coder-1.5B GGUF (`cargo xtask fetch qwen2`), the raw bytes of the first blocks of the
first tensor of that type and their values as gguf-py (llama.cpp's own Python package,
`pip install gguf`) dequantizes them. nwc's dequantizer is checked against it in
crates/nwc-tensor/tests/gguf_kquants.rs.

Run: python3 scripts/kquant_fixture.py .data/qwen2/qwen2.5-coder-1.5b-instruct.gguf
"""
import json
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

BLOCKS = 4
reader = GGUFReader(sys.argv[1])
out, seen = [], set()
for t in reader.tensors:
    ty = GGMLQuantizationType(t.tensor_type)
    if ty.name in seen or ty.name in ("F32", "F16", "BF16"):
        continue
    seen.add(ty.name)
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    block_values, block_bytes = {
        "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_0": (32, 34),
        "Q4_0": (32, 18), "Q4_1": (32, 20),
    }[ty.name]
    data = raw[: BLOCKS * block_bytes]
    values = dequantize(data, ty).astype(np.float32).reshape(-1)
    assert values.size == BLOCKS * block_values
    out.append({
        "tensor": t.name,
        "type": ty.name,
        "code": int(t.tensor_type),
        "bytes": data.tobytes().hex(),
        "values": [float(v) for v in values],
    })
    print(t.name, ty.name, values[:4])
# Types this model does not use (Q5_K, Q8_0), and more of the others: random blocks (fixed seed)
# with valid f16 scale fields, dequantized by gguf-py the same way.
rng = np.random.default_rng(7)
layout = {  # type: (values, bytes, offsets of f16 fields)
    "Q4_K": (256, 144, [0, 2]), "Q5_K": (256, 176, [0, 2]), "Q6_K": (256, 210, [208]),
    "Q8_0": (32, 34, [0]),
}
for name, (nv, nb, f16_at) in layout.items():
    ty = GGMLQuantizationType[name]
    data = rng.integers(0, 256, size=BLOCKS * nb, dtype=np.uint8)
    for b in range(BLOCKS):
        for at in f16_at:
            v = np.float16(rng.uniform(-0.05, 0.05))
            data[b * nb + at : b * nb + at + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    values = dequantize(data, ty).astype(np.float32).reshape(-1)
    out.append({"tensor": "random blocks", "type": name, "code": int(ty),
                "bytes": data.tobytes().hex(), "values": [float(v) for v in values]})

json.dump({"source": "gguf-py " + __import__("importlib.metadata").metadata.version("gguf"),
           "model": "Qwen2.5-Coder-1.5B-Instruct GGUF", "cases": out},
          open("crates/nwc-tensor/tests/fixtures/kquants.json", "w"))
