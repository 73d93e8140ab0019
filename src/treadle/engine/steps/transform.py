"""``TRANSFORM``: build a JSON value from the run context with templates."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON
from treadle.engine.steps import Sleep, StepContext


class Config(BaseModel):
    """Configuration of a ``TRANSFORM`` node."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    output: JsonValue  # required; may be null. Templates anywhere inside are rendered.


class Transform:
    """Returns ``output`` with every template in it rendered (keys included)."""

    name: ClassVar[str] = "TRANSFORM"

    # Pure and quick: runs inside the claiming transaction (one transaction per step).

    inline: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        """Render the configured output against the run context."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        return await ctx.render(config.output)


STEP = Transform()
