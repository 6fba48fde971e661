"""The verdict both export checks share (`gguf_agreement.py`, `hf_agreement.py`): another
implementation's perplexity over the same windows must be within 0.5 % of nwc's own, on the same
number of scored tokens."""
import math
import sys


def verdict(who, total_nll, scored, nwc, text_path):
    """Prints the comparison and exits 0 when `who`'s perplexity (from the summed negative
    log-likelihood `total_nll` over `scored` tokens) agrees with nwc's (`nwc`: the JSON
    `nwc eval --json` printed)."""
    ppl = math.exp(total_nll / scored)
    rel = ppl / nwc["perplexity"] - 1.0
    print(f"{who} {ppl:.4f} vs nwc {nwc['perplexity']:.4f} on {text_path}: "
          f"{100 * rel:+.3f} % ({scored} tokens scored by {who}, {nwc['tokens']} by nwc)")
    ok = abs(rel) <= 0.005 and scored == nwc["tokens"]
    print("agreement: " + ("ok" if ok else "FAILED"))
    sys.exit(0 if ok else 1)
