"""Checks a Hugging Face directory written by `nwc decompress` with transformers, an
implementation nobody here wrote: transformers must load the directory unchanged
(`AutoModelForCausalLM`, `AutoTokenizer`) and its perplexity on a text must agree with the
perplexity nwc computes on the .nwc itself (within 0.5 %).

Both sides score the same way: the text's first WINDOWS non-overlapping windows of CTX tokens,
each window's first token unscored (nwc's `layerwise_perplexity`). transformers tokenizes the
text with the directory's own tokenizer.json; its token count must equal nwc's.

Needs: pip install torch transformers (CPU is enough).

Run (the command docs/llm-export.md records):
    N=target/debug/nwc
    $N decompress target/gguf-check/smollm2.nwc -o target/hf-check/smollm2 --dtype f32
    python3 scripts/hf_agreement.py target/hf-check/smollm2 \\
        .data/canterbury/alice29.txt target/gguf-check/nwc-eval.json
(the .nwc and nwc-eval.json as made by the commands in scripts/gguf_agreement.py).
"""
import json
import os
import sys

import torch

from agreement import verdict


def main():
    model_dir, text_path, nwc_json = sys.argv[1:4]
    nwc = json.load(open(nwc_json))
    ctx, windows = nwc["ctx"], nwc["windows"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count())
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    text = open(text_path, "rb").read().decode("utf-8", errors="replace")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    total, scored = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            win = ids[w * ctx:(w + 1) * ctx]
            if len(win) < ctx:
                break
            x = torch.tensor([win])
            logits = model(x).logits[0].double()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            total -= float(logp[torch.arange(ctx - 1), x[0, 1:]].sum())
            scored += ctx - 1
    verdict("transformers", total, scored, nwc, text_path)


if __name__ == "__main__":
    main()
