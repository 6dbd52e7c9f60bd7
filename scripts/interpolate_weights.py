"""Interpolate two models of one architecture: ``(1 - alpha) * A + alpha * B``, weight by weight.

A fine-tuned model and the model it started from lie in one basin, and the straight line
between their weights often keeps most of what the fine-tune learnt while losing less of what
the start knew (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022:
WiSE-FT). medsr uses it to fine-tune a shipped model on the real-scan corpus without letting
the scans it was shipped for fall behind (issue #31).

Usage::

    python scripts/interpolate_weights.py medsr/models/default_mr \\
        benchmarks/results/corpus_mr_candidate --alpha 0.5 --out /tmp/mr_wise50

The card is B's, with ``weights`` naming the interpolation and ``training_data`` the union of
both cards' lists (every series either model learnt from).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _union(a: list, b: list) -> list:
    seen, out = set(), []
    for item in [*a, *b]:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def interpolate(a: Path, b: Path, alpha: float, out: Path) -> None:
    from medsr.checkpoint import load_model, save_model
    from medsr.nets import network_config

    if not 0.0 <= alpha <= 1.0:
        raise SystemExit("error: --alpha must be within [0, 1]")
    net_a, card_a = load_model(a)
    net_b, card_b = load_model(b)
    if network_config(net_a) != network_config(net_b):
        raise SystemExit(f"error: {a} and {b} have different architectures")
    sa, sb = net_a.state_dict(), net_b.state_dict()
    net_b.load_state_dict({k: (1 - alpha) * sa[k] + alpha * sb[k] for k in sb})
    card = dict(card_b)
    card.pop("format", None)
    card["weights"] = (f"interpolated: {1 - alpha:g} x {a} + {alpha:g} x {b} "
                       "(WiSE-FT, scripts/interpolate_weights.py)")
    card["interpolated_from"] = [
        {"model": str(a), "experiment": card_a.get("experiment"), "steps": card_a.get("steps"),
         "weight": 1 - alpha},
        {"model": str(b), "experiment": card_b.get("experiment"), "steps": card_b.get("steps"),
         "weight": alpha}]
    card["training_data"] = _union(card_a.get("training_data", []),
                                   card_b.get("training_data", []))
    out.mkdir(parents=True, exist_ok=True)
    save_model(net_b, out, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the starting model (weight 1 - alpha)")
    parser.add_argument("b", type=Path, help="the fine-tuned model (weight alpha)")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    interpolate(args.a, args.b, args.alpha, args.out)


if __name__ == "__main__":
    main()
