"""Activation checkpointing: keep fewer activations for backward, recompute the rest.

Each library has its own switch, and every model family we adapt comes from one of them: timm
and open_clip models take ``set_grad_checkpointing(True)``, Hugging Face models
``activation_checkpointing_enable()`` (``gradient_checkpointing_enable()`` in older
transformers). Adapters live inside the blocks that get checkpointed, so they are recomputed
with them; dropout draws the same masks again (the RNG state is replayed), so gradients are the
same as without checkpointing. Nothing is stored in the weights: merges and adapter files are
unchanged.
"""

from __future__ import annotations

from torch import nn

from repadapter.errors import RepAdapterError

_HF_SWITCHES = ("activation_checkpointing", "gradient_checkpointing")


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> nn.Module:
    """Switch activation checkpointing on (or off) through the model's own library; returns it.

    Non-reentrant checkpointing is asked for where the library lets us choose: with a frozen
    backbone the blocks' inputs need no gradient, and reentrant checkpointing would then drop the
    gradients of the adapters inside them.
    """
    for switch in _HF_SWITCHES:
        if callable(getattr(model, f"{switch}_enable", None)):
            if enable:
                getattr(model, f"{switch}_enable")(**{f"{switch}_kwargs": {"use_reentrant": False}})
            else:
                getattr(model, f"{switch}_disable")()
            return model
    timm_switch = getattr(model, "set_grad_checkpointing", None)
    if not callable(timm_switch):
        raise RepAdapterError(
            f"{type(model).__name__} has no activation checkpointing switch (timm's and open_clip's "
            "set_grad_checkpointing, or Hugging Face's activation_checkpointing_enable); "
            "train it without --grad-checkpointing"
        )
    try:
        timm_switch(enable)
    except (AssertionError, NotImplementedError) as err:
        raise RepAdapterError(
            f"{type(model).__name__} does not support activation checkpointing ({err}); "
            "train it without --grad-checkpointing"
        ) from err
    return model
