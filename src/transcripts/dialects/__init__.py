"""The public API dialects. Each is an edge adapter around the shared repositories and
services: its routes, a pure mapping from domain objects to its JSON, and its own error body.

A dialect is one object, ``Dialect``, exported by its package as ``DIALECT``; the
application includes every dialect it is given (``create_app(dialects=...)``) and answers
each path's failures in the body of the dialect whose prefix it falls under.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import APIRouter
from pydantic import BaseModel

from transcripts.dialects.routing import ErrorRenderer

__all__ = ["Dialect", "dialect_for_path"]


@dataclass(frozen=True)
class Dialect:
    name: str
    # The paths it answers: "/v1" covers "/v1" and "/v1/...".
    prefix: str
    render_error: ErrorRenderer
    routers: tuple[APIRouter, ...]
    # The schema of its error body, by the name the OpenAPI document gives it.
    error_model: type[BaseModel]
    # Its contract under openapi/, which the test suite checks every answer against.
    spec: str | None = None

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


def dialect_for_path(dialects: Sequence[Dialect], path: str) -> Dialect:
    """The dialect whose prefix ``path`` falls under (the longest); else the first, which
    also answers paths outside every dialect (an unknown route, a recording link)."""
    covering = [dialect for dialect in dialects if dialect.covers(path)]
    if not covering:
        return dialects[0]
    return max(covering, key=lambda dialect: len(dialect.prefix))
