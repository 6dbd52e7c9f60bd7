"""A narrower copy of a multi-factor ``lrrefiner``, to fine-tune as a cheaper network.

Keeps the ``features`` most important channels of the residual stream (the channels that
``conv_first``, every block's second convolution and ``conv_after_body`` add into), of each
block's inner channels and of each head's sub-pixel features; importance is the L1 norm of
every weight that writes or reads the channel. The copy starts from what the wide model
learnt: a network trained from scratch at 16 features lost up to 1.45 dB to the 32-feature
default on a held-out chest CT, a 24-feature copy of it keeps two thirds of its gain there
before any fine-tuning (``docs/speed.md``). ``medsr train`` uses it with ``network.init`` and
``network.init_narrow: true``.
"""

from __future__ import annotations

import math

import torch


def _keep(scores: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, n).indices).values


def narrow(net: torch.nn.Module, features: int) -> torch.nn.Module:
    """A copy of ``net`` (an LRRefiner) with ``features`` channels, weights sliced from it."""
    from medsr.nets import build_network

    if getattr(net, "name", "") != "lrrefiner":
        raise ValueError(f"only an lrrefiner can be narrowed, not {getattr(net, 'name', net)!r}")
    if features > net.config["features"]:
        raise ValueError(f"cannot widen {net.config['features']} features to {features}")
    config = {**net.config, "features": features}
    small = build_network(name=net.name, **config)
    w = {k: v.detach() for k, v in net.state_dict().items()}
    blocks = len(net.body)
    r_of = {f: math.prod(head[0].scale) for f, head in net.heads.items()}

    stream = w["conv_first.weight"].abs().sum((1, 2, 3))
    for i in range(blocks):
        stream = stream + w[f"body.{i}.conv2.weight"].abs().sum((1, 2, 3))
        stream = stream + w[f"body.{i}.conv1.weight"].abs().sum((0, 2, 3))
    stream = stream + w["conv_after_body.weight"].abs().sum((1, 2, 3))
    for f in r_of:
        stream = stream + w[f"heads.{f}.0.conv.weight"].abs().sum((0, 2, 3))
    s = _keep(stream, features)

    out = {}
    out["conv_first.weight"], out["conv_first.bias"] = (w["conv_first.weight"][s],
                                                        w["conv_first.bias"][s])
    for i in range(blocks):
        c1, c2 = f"body.{i}.conv1", f"body.{i}.conv2"
        inner = _keep(w[f"{c1}.weight"].abs().sum((1, 2, 3))
                      + w[f"{c2}.weight"].abs().sum((0, 2, 3)), features)
        out[f"{c1}.weight"] = w[f"{c1}.weight"][inner][:, s]
        out[f"{c1}.bias"] = w[f"{c1}.bias"][inner]
        out[f"{c2}.weight"] = w[f"{c2}.weight"][s][:, inner]
        out[f"{c2}.bias"] = w[f"{c2}.bias"][s]
    out["conv_after_body.weight"] = w["conv_after_body.weight"][s][:, s]
    out["conv_after_body.bias"] = w["conv_after_body.bias"][s]
    for f, r in r_of.items():
        up, last = f"heads.{f}.0.conv", f"heads.{f}.2"
        wide = w[f"{up}.weight"].shape[0] // r
        grouped = w[f"{up}.weight"].reshape(wide, r, *w[f"{up}.weight"].shape[1:])
        keep = _keep(grouped.abs().sum((1, 2, 3, 4)) + w[f"{last}.weight"].abs().sum((0, 2, 3)),
                     features)
        out[f"{up}.weight"] = grouped[keep][:, :, s].reshape(features * r, features,
                                                              *grouped.shape[3:])
        out[f"{up}.bias"] = w[f"{up}.bias"].reshape(wide, r)[keep].reshape(-1)
        out[f"{last}.weight"] = w[f"{last}.weight"][:, keep]
        out[f"{last}.bias"] = w[f"{last}.bias"]
    missing = set(small.state_dict()) - set(out)
    if missing:
        raise ValueError(f"an lrrefiner with layers narrow() does not know: {sorted(missing)}")
    small.load_state_dict(out)
    return small
