"""`RepAdapterConfig`: the hyper-parameters of an injection, saved with every adapter file."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from repadapter.errors import RepAdapterError

# Transformer placements: every transformer family has them.
PLACEMENTS = ("attn", "block")
# Every placement some family offers (see docs/placements.md): "io" adds adapters on MLP outputs
# (ConvNeXt), "dwconv" is ConvNeXt's paper placement, which trains but does not merge.
ALL_PLACEMENTS = (*PLACEMENTS, "io", "dwconv")


@dataclass(frozen=True)
class RepAdapterConfig:
    """Where adapters go, their shape, and what else trains.

    Defaults are the paper's ViT setting: dim 8, groups 2, adapters before MHA and FFN.

    Args:
        dim: bottleneck width r of each adapter.
        groups: groups of the up projection (block-diagonal r -> d); must divide ``dim``.
        scale: s in ``x + s * up(dropout(down(x)))``; the paper searches {0.1, 0.5, 1, 5, 10}.
        dropout: dropout on the bottleneck, active in training only.
        placement: ``"attn"`` (before multi-head attention) or ``"block"`` (also before the FFN);
            some families offer more (`ALL_PLACEMENTS`, see docs/placements.md).
        train_head: leave the classifier head trainable.
        trainable: extra regular expressions; base parameters whose name matches one train too.
        target_modules: regular expressions naming layers (nn.Linear, nn.Conv2d, fused
            nn.MultiheadAttention) whose input gets an adapter, each folded into its layer. A
            pattern matches a module's whole name or its last dotted parts (``"qkv"`` matches
            ``blocks.0.attn.qkv``). When given, they replace the family's placement.
    """

    dim: int = 8
    groups: int = 2
    scale: float = 1.0
    dropout: float = 0.1
    placement: str = "block"
    train_head: bool = True
    trainable: tuple[str, ...] = ()
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, example in (("trainable", "('norm',)"), ("target_modules", r"(r'attn\.qkv', 'fc1')")):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise RepAdapterError(
                    f"{name} must be a sequence of regex strings, got {value!r}; e.g. {name}={example}"
                )
            object.__setattr__(self, name, tuple(value))
        for pattern in self.target_modules:
            try:
                re.compile(pattern)
            except re.error as err:
                raise RepAdapterError(
                    f"target_modules pattern {pattern!r} is not a valid regex: {err}"
                ) from err
        self.check_placement(self.placement)
        if not isinstance(self.dim, int) or self.dim < 1:
            raise RepAdapterError(f"dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.groups, int) or self.groups < 1:
            raise RepAdapterError(f"groups must be a positive integer, got {self.groups!r}")
        if self.dim % self.groups:
            raise RepAdapterError(
                f"dim={self.dim} is not divisible by groups={self.groups}; "
                "pick groups that divide dim (e.g. dim=8 with groups 1, 2, 4 or 8)"
            )
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise RepAdapterError(f"scale must be a finite number above 0, got {self.scale!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise RepAdapterError(
                f"scale must be a finite number above 0, got {self.scale!r}: at 0 the adapters do "
                "nothing and below 0 they subtract; the paper searches 0.1, 0.5, 1, 5 and 10"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise RepAdapterError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @staticmethod
    def placement_error(
        placement: str, offered: tuple[str, ...] = ALL_PLACEMENTS, owner: str | None = None
    ) -> str | None:
        """What is wrong with the placement name ``placement``, or None when ``offered`` has it.

        ``offered`` defaults to every placement some family has; ``owner`` names whose
        placements ``offered`` are (``"timm_vit models"``), for the message.
        """
        if placement in offered:
            return None
        if owner is None:
            return f"placement={placement!r} is not supported; the placement must be one of {offered}"
        return (
            f"placement={placement!r} does not exist for {owner}; "
            f"use one of {offered}, or name layers with target_modules=..."
        )

    @staticmethod
    def check_placement(
        placement: str, offered: tuple[str, ...] = ALL_PLACEMENTS, owner: str | None = None
    ) -> None:
        """Raise `placement_error` as a `RepAdapterError`, if there is one: the one check of a
        placement name, for this config and for a model family's placements (`inject`, a
        Segmenter's backbone); `TrainConfig` reports `placement_error` with its other checks."""
        error = RepAdapterConfig.placement_error(placement, offered, owner)
        if error is not None:
            raise RepAdapterError(error)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` reads it back."""
        out = asdict(self)
        out["trainable"] = list(self.trainable)
        out["target_modules"] = list(self.target_modules)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepAdapterConfig:
        """Build a config from `to_dict` output, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RepAdapterError(
                f"unknown RepAdapterConfig keys {sorted(unknown)}; known keys are {sorted(known)}"
            )
        kwargs = dict(data)
        for name in ("trainable", "target_modules"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)
