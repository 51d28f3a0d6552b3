"""Anam AI's ``/v1`` sessions dialect."""

from __future__ import annotations

from transcripts.dialects import Dialect
from transcripts.dialects.anam.errors import render_anam_error
from transcripts.dialects.anam.routes import router
from transcripts.generated.anam import Error

__all__ = ["DIALECT"]

DIALECT = Dialect(
    name="anam",
    prefix="/v1",
    render_error=render_anam_error,
    routers=(router,),
    error_model=Error,
    spec="anam.yaml",
)
