"""Deepen a residual model without changing what it computes: new residual blocks go after the
body's last block with their second convolution zeroed, so each starts as the identity
(``x + 0``) and the deeper network's output equals the original's until training moves it
(the "Net2DeeperNet" idea of Chen et al., ICLR 2016, in its residual form). A fine-tune then
starts from everything the shallow model knew instead of from scratch (issue #31: a deeper
coarse-plane MR model, trained on the project's 2 CPU cores).

Usage::

    python scripts/deepen_model.py medsr/models/default_mr_coarse --blocks 8 \\
        --out /work/data/runs/mr-coarse-deep-init

The card is the source's, with ``num_blocks`` raised and ``deepened_from`` naming the source.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def deepen(src: Path, blocks: int, out: Path, seed: int = 0) -> None:
    import torch

    from medsr.checkpoint import load_model, save_model
    from medsr.nets import build_network

    net, card = load_model(src)
    config = dict(card["network"])
    have = int(config.get("num_blocks", -1))
    if not hasattr(net, "body") or have < 0:
        raise SystemExit(f"error: {src} is not a residual network with num_blocks")
    if blocks <= have:
        raise SystemExit(f"error: --blocks must exceed the model's {have}")
    torch.manual_seed(seed)
    config["num_blocks"] = blocks
    name = config.pop("name")
    deep = build_network(name, **config)
    state = deep.state_dict()
    state.update(net.state_dict())  # every tensor of the source keeps its name and value
    for i in range(have, blocks):
        for part in ("weight", "bias"):
            state[f"body.{i}.conv2.{part}"].zero_()
    deep.load_state_dict(state)
    card = dict(card)
    card.pop("format", None)
    card["network"] = {**card["network"], "num_blocks": blocks}
    card["deepened_from"] = {"model": str(src), "name": card.get("name"), "blocks": have,
                             "experiment": card.get("experiment"), "steps": card.get("steps")}
    out.mkdir(parents=True, exist_ok=True)
    save_model(deep, out, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model folder (card.json + weights)")
    parser.add_argument("--blocks", type=int, required=True, help="residual blocks wanted")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    deepen(args.model, args.blocks, args.out)
    print(f"deepened {args.model} to {args.blocks} blocks -> {args.out}")


if __name__ == "__main__":
    main()
