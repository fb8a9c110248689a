"""The base of every config model (frozen, unknown keys are errors) and shared field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for every config model: immutable, unknown keys are errors."""

    # coerce_numbers_to_str: `password: 1234` or `group_id: 42` in YAML mean strings.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


NonEmptyStr = Annotated[str, Field(min_length=1)]
