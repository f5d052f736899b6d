"""The controlled variants as a table of their rules (what ``masks.MASK_RULES`` is for their masks).

=============  ===========  ===============  ===========================================================
variant        video loss   actions see      inference
=============  ===========  ===============  ===========================================================
fast_wam       yes          first frame      ``first_frame``: cache the clean first frame once, then
                                             the action expert alone for every Euler step
no_cotrain     no           first frame      ``first_frame``
joint          yes          whole video      ``joint``: video and actions denoised together, a full
                                             masked pass per step (imagine-then-execute, no cache)
idm            yes          given future     ``imagined_future``: denoise the future video first
                                             (video only), then cache [first; future] under the IDM
                                             mask and run the action expert against it
=============  ===========  ===============  ===========================================================

In training IDM's actions see a second copy of the ground-truth future (group ``cond``,
noise-augmented), which at inference the imagined future replaces. Several action samples per chunk
and real-time chunking need the cached action loop (``first_frame`` or ``imagined_future``; RTC
only ``first_frame``: its prefix must not depend on sampled noise).
"""

from __future__ import annotations

from dataclasses import dataclass

INFERENCE_MODES = ("first_frame", "imagined_future", "joint")


@dataclass(frozen=True)
class VariantRules:
    video_loss: bool  # co-training: the future frames are a flow-matching target (lambda_video)
    future_condition: bool  # training: actions attend to the noise-augmented ground-truth future
    inference: str  # one of INFERENCE_MODES

    @property
    def cached_loop(self) -> bool:
        """Actions come from the static cached action loop (``action_loop.ActionLoop``)."""
        return self.inference != "joint"

    @property
    def realtime_chunking(self) -> bool:
        """RTC can guide this variant's actions: its cached prefix is the observation alone, so it
        stays constant across the guided steps (``imagined_future``'s depends on sampled noise)."""
        return self.inference == "first_frame"


VARIANT_RULES: dict[str, VariantRules] = {
    "fast_wam": VariantRules(video_loss=True, future_condition=False, inference="first_frame"),
    "no_cotrain": VariantRules(video_loss=False, future_condition=False, inference="first_frame"),
    "joint": VariantRules(video_loss=True, future_condition=False, inference="joint"),
    "idm": VariantRules(video_loss=True, future_condition=True, inference="imagined_future"),
}


# The variants real-time chunking can run (named in the refusals of the others).
RTC_VARIANTS = tuple(v for v, rules in VARIANT_RULES.items() if rules.realtime_chunking)


def variant_rules(variant: str) -> VariantRules:
    if variant not in VARIANT_RULES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {tuple(VARIANT_RULES)}")
    return VARIANT_RULES[variant]
