"""Loads a Hugging Face directory exported by nwc (`compress_llama --export-hf DIR`) with
transformers, unchanged, and prints its perplexity with the same windows nwc uses (non-overlapping
windows of CTX tokens from the start of the text; the first token of each window is not scored).

    /tmp/hfvenv/bin/python xtask/scripts/hf_check_export.py DIR TEXT CTX WINDOWS
"""
import math
import sys

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

def main(d, text_path, ctx, windows):
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{d}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    model.eval()
    text = open(text_path, "rb").read().decode("utf-8", errors="replace")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    total, n = 0.0, 0
    for w in range(windows):
        chunk = ids[w * ctx:(w + 1) * ctx]
        if len(chunk) < ctx:
            break
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([chunk])).logits[0].double(), -1)
        total -= sum(float(logp[t, chunk[t + 1]]) for t in range(ctx - 1))
        n += ctx - 1
    print(f"transformers {__import__('transformers').__version__}: {d} perplexity {math.exp(total / n):.4f} over {n} tokens")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
