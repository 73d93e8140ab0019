"""``CONDITION``: evaluate a Jinja2 expression; edges with ``"when"`` pick the branch."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON
from treadle.engine.steps import Sleep, StepContext


class Config(BaseModel):
    """Configuration of a ``CONDITION`` node."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    # A bare expression (no braces), e.g. ``steps.summarize.output.text | length > 100``;
    # its syntax is checked when the workflow is saved.
    expression: str = Field(min_length=1)

    @field_validator("expression")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the expression is empty")
        return value


class Condition:
    """Evaluates ``expression`` against the run context; output ``{"result": bool}``."""

    name: ClassVar[str] = "CONDITION"

    # Pure and quick: runs inside the claiming transaction (one transaction per step).

    inline: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        """Evaluate the expression; any JSON value counts by Python truthiness."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        value = await ctx.evaluate(config.expression)
        return {"result": bool(value)}


STEP = Condition()
