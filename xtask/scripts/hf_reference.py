"""Reference logits for SmolLM2-135M from Hugging Face transformers (an implementation nobody
on this project wrote), stored as a test fixture for nwc-llm's forward pass.

    python -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers gguf
    /tmp/hfvenv/bin/python xtask/scripts/hf_reference.py .data/smollm2 \
        crates/nwc-llm/tests/fixtures/smollm2_hf_reference.json

transformers dequantizes the GGUF to f32 and undoes llama.cpp's Q/K row permutation itself.
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "Alice was beginning to get very tired of sitting by her sister on the bank,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1869, 42 ships crossed the Atlantic; 7 of them",
]
# A fixed probe of vocabulary entries whose logits are stored at every position.
PROBE = list(range(0, 49152, 769))

def main(model_dir, out):
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, torch_dtype=torch.float32)
    model.eval()
    cases = []
    for p in PROMPTS:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        cases.append({
            "prompt": p,
            "ids": ids,
            "probe_logits": [[float(row[i]) for i in PROBE] for row in logits],
            "top5": [row.topk(5).indices.tolist() for row in logits],
            "next_logprob": [float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)],
        })
    # Perplexity on the first 1024 tokens of Alice in Wonderland (one window).
    text = open(sys.argv[3] if len(sys.argv) > 3 else ".data/canterbury/alice29.txt", encoding="latin-1").read()
    ids = tok(text, add_special_tokens=False)["input_ids"][:1024]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    nll = -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)) / (len(ids) - 1)
    json.dump({
        "source": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
        "model": gguf,
        "probe": PROBE,
        "cases": cases,
        "alice_1024": {"ids_head": ids[:64], "n_tokens": len(ids), "ppl": math.exp(nll)},
    }, open(out, "w"))
    print("alice ppl", math.exp(nll))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
