"""Parsing REST query parameters and headers into the services' argument types."""

from __future__ import annotations

from typing import Final

from treadle.errors import ValidationError

# GraphQL's Int range; larger numbers would overflow the database's integer columns.
INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1


def parse_int(raw: str | None, name: str, default: int) -> int:
    """``raw`` as a 32-bit integer (``default`` when absent or blank), else VALIDATION_ERROR."""
    if raw is None or not raw.strip():
        return default
    try:
        number = int(raw)
    except ValueError as exc:
        raise ValidationError(
            f"{name} must be an integer", fields={name: "not an integer"}
        ) from exc
    if not INT_MIN <= number <= INT_MAX:
        raise ValidationError(f"{name} is out of range", fields={name: "out of range"})
    return number
