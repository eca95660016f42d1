"""The ``identity:`` block of the policy: the transaction sources beside ``data_path`` and
how profiles are stitched into customers (:mod:`core.identity`, :mod:`core.store.profiles`).

Validated with the rest of :class:`service.config.Settings` (unknown keys refused).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.env import project_path

__all__ = ["IdentitySettings", "TransactionSource"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TransactionSource(_Model):
    """A further transaction log (a store POS export ...): its ids become ``name:id``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    path: Path

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        return project_path(value)


class IdentitySettings(_Model):
    """Several sources and identity resolution (:mod:`core.identity`)."""

    primary_source: str = Field(default="shop", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    sources: list[TransactionSource] = Field(default_factory=list, max_length=16)
    over_shared_limit: int = Field(
        default=3,
        ge=2,
        le=1000,
        description="an identifier held by this many profiles joins nobody",
    )
    phone_region: str = Field(default="GB", pattern=r"^[A-Z]{2}$")

    @model_validator(mode="after")
    def _unique(self) -> IdentitySettings:
        names = [self.primary_source, *(s.name for s in self.sources)]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self

    @property
    def source_names(self) -> list[str]:
        """Every source, the primary first (the survivor rule's ranking)."""
        return [self.primary_source, *(s.name for s in self.sources)]
