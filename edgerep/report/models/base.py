"""The two kinds of model edgerep's outputs are made of: strict (every field declared, unknown fields refused)
for what CI and `gate` / `diff` read, and open (declared fields typed, further diagnostic fields allowed) for
deep blocks whose internals change with the tools that fill them."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A typed block: every field is declared and described; an unknown field is a validation error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_inf_nan="null")


class Open(BaseModel):
    """A diagnostic block: the declared fields are typed; further fields are free-form (additionalProperties)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, ser_json_inf_nan="null")


def dump(model: BaseModel) -> dict:
    """A model as report.json writes it: JSON types, field aliases (``schema``), nothing dropped."""
    return model.model_dump(mode="json", by_alias=True)
