"""Structured attention masks over token groups (True = the query may attend to the key).

Token groups, in sequence order:

* ``first``:  clean latents of the current (first) frame, t = 0.
* ``future``: noisy latents of the future frames (video flow-matching target).
* ``cond``:   IDM only, training: ground-truth future latents (noise-augmented) that the actions
  condition on; at IDM inference the generated future video plays this role.
* ``action``: the noisy action chunk (action expert tokens).

Rules per variant (query group -> key groups):

=============  =========  ==================  ===============  ======================
variant        first      future              cond             action
=============  =========  ==================  ===============  ======================
fast_wam       first      first, future       -                first, action
no_cotrain     first      (not computed)      -                first, action
joint          first      first, future       -                first, future, action
idm            first      first, future       first, cond      first, cond, action
=============  =========  ==================  ===============  ======================

Joint lets the actions attend to the whole video (future frames included) while video never
attends to actions, as in the authors' code (their joint mask); in all variants the clean first
frame sees only itself, which is what makes its per-layer K/V cacheable.
"""

from __future__ import annotations

import torch

GROUPS = ("first", "future", "cond", "action")

MASK_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "fast_wam": {"first": ("first",), "future": ("first", "future"), "action": ("first", "action")},
    "no_cotrain": {"first": ("first",), "future": ("first", "future"), "action": ("first", "action")},
    "joint": {
        "first": ("first",),
        "future": ("first", "future"),
        "action": ("first", "future", "action"),
    },
    "idm": {
        "first": ("first",),
        "future": ("first", "future"),
        "cond": ("first", "cond"),
        "action": ("first", "cond", "action"),
    },
}


def group_slices(sizes: dict[str, int]) -> dict[str, slice]:
    """Sequence slices of the groups present (size > 0), in GROUPS order."""
    out, start = {}, 0
    for g in GROUPS:
        n = sizes.get(g, 0)
        if n:
            out[g] = slice(start, start + n)
            start += n
    return out


def build_mask(variant: str, sizes: dict[str, int], device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean [N, N] mask for the groups in ``sizes`` (``{group: number of tokens}``)."""
    if variant not in MASK_RULES:
        raise ValueError(f"unknown variant {variant!r}")
    unknown = set(sizes) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown token groups {sorted(unknown)}")
    rules = MASK_RULES[variant]
    slices = group_slices(sizes)
    n = sum(s.stop - s.start for s in slices.values())
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    for q, qs in slices.items():
        if q not in rules:
            raise ValueError(f"variant {variant!r} has no token group {q!r}")
        for k in rules[q]:
            if k in slices:
                mask[qs, slices[k]] = True
    return mask
