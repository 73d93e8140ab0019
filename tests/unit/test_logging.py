"""Log lines: uvicorn's request lines lose query values that may be secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from treadle.logging import TreadleFormatter, scrub_query


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/api/runs/1/stream?token=eyJabc.def.ghi", "/api/runs/1/stream?token=[REDACTED]"),
        ("/graphql?token=a&page=2", "/graphql?token=[REDACTED]&page=2"),
        ("/x?sig=abc&api_key=k&pageSize=5", "/x?sig=[REDACTED]&api_key=[REDACTED]&pageSize=5"),
        ("/x?flag&empty=", "/x?flag&empty="),
        ("/api/workflows", "/api/workflows"),
    ],
)
def test_query_values_are_redacted_but_paging(target: str, shown: str) -> None:
    assert scrub_query(target) == shown


def test_an_access_line_is_scrubbed_and_the_record_left_alone() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TreadleFormatter("%(name)s %(message)s"))
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/runs/1/stream?token=secret-jwt", "1.1", 200),
        None,
    )
    handler.emit(record)
    line = json.loads(stream.getvalue())
    assert line["message"] == '127.0.0.1:5 - "GET /api/runs/1/stream?token=[REDACTED] HTTP/1.1" 200'
    assert record.args is not None
    assert "secret-jwt" in str(record.args)  # other handlers still see the original record
