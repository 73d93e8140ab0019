"""Rendering is bounded in wall-clock time per step and does not hold the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from treadle.engine.template import Allowance, HandOff, TemplateEngine, TemplateError

# About 1.5-2 s of pure Python work that no size, loop or work cap stops.
LONG = "{% for i in range(99999) %}{{ (i ~ 'x')|upper|length }}{% endfor %}"


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine()


async def test_a_long_render_is_cut_off_near_its_budget(engine: TemplateEngine) -> None:
    allowance = Allowance(seconds=0.3)
    started = time.monotonic()
    with pytest.raises(TemplateError, match="ran out of time"):
        await engine.render_bounded(LONG, {}, allowance)
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 0.3 + 0.5, elapsed  # slack for a loaded machine
    # The budget is the step's, not the render's: the next render of the step has none left.
    with pytest.raises(TemplateError, match="used up"):
        await engine.render_bounded("{{ 1 }}", {}, allowance)
    engine.close()


async def test_the_step_timeout_bounds_every_render(engine: TemplateEngine) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match="ran out of time"):
        await engine.render_bounded(LONG, {}, Allowance(deadline=started + 0.3))
    assert time.monotonic() - started < 0.8
    engine.close()


async def test_a_long_render_leaves_the_event_loop_free(engine: TemplateEngine) -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    rendered = await engine.render_bounded(LONG, {}, Allowance())
    took = time.monotonic() - started
    ticker.cancel()
    assert isinstance(rendered, str)
    assert len(rendered) > 0
    assert took > 0.5  # really long, yet the loop kept ticking
    assert max(gaps) < 0.25, (took, max(gaps))
    engine.close()


async def test_an_inline_step_hands_a_long_render_over(engine: TemplateEngine) -> None:
    assert await engine.render_bounded("{{ 2 * 3 }}", {}, Allowance(inline=True)) == 6
    started = time.monotonic()
    with pytest.raises(HandOff):
        await engine.render_bounded(LONG, {}, Allowance(inline=True))
    assert time.monotonic() - started < 0.2  # the loop was held for about one slice


def test_breaking_a_huge_word_is_refused_before_it_runs(engine: TemplateEngine) -> None:
    # textwrap re-slices the rest of a long word per piece: 699,000 chars took ~6 s.
    started = time.monotonic()
    with pytest.raises(TemplateError, match="too much work"):
        engine.render("{{ ('a'*699000)|wordwrap(2)|length }}", {})
    assert time.monotonic() - started < 0.5
    assert engine.render("{{ ('a'*1000)|wordwrap(2)|length }}", {}) == 1499
