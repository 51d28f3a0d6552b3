"""Estimated cost of a session: LLM + STT + TTS usage at unit prices, in exact decimals.

The price table is configuration (``TRANSCRIPTS_PRICES``, JSON). Prices are per provider,
and for LLMs per provider and model; a usage line with no price costs nothing and is logged,
so a new model never breaks finalize.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel, Field

__all__ = ["LlmPrice", "PriceTable", "Usage", "estimate_cost_micros"]

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
SECONDS_PER_MINUTE = Decimal(60)


class LlmPrice(BaseModel):
    input_per_million_tokens: Decimal = Field(ge=0)
    output_per_million_tokens: Decimal = Field(ge=0)


class SttPrice(BaseModel):
    per_minute: Decimal = Field(ge=0)


class TtsPrice(BaseModel):
    per_million_characters: Decimal = Field(ge=0)


class PriceTable(BaseModel):
    # LLM prices keyed "provider/model" (e.g. "openai/gpt-4o-mini"); STT and TTS by provider.
    llm: dict[str, LlmPrice] = Field(default_factory=dict)
    stt: dict[str, SttPrice] = Field(default_factory=dict)
    tts: dict[str, TtsPrice] = Field(default_factory=dict)


# USD list prices from OpenAI's API price list (STT "openai" is whisper-1, TTS "openai" tts-1);
# Chatterbox is an open-source model run in-house, with no per-character fee. README.md,
# "Price table", documents the sources; TRANSCRIPTS_PRICES replaces the whole table.
DEFAULT_PRICES = PriceTable(
    llm={
        "openai/gpt-4o-mini": LlmPrice(
            input_per_million_tokens=Decimal("0.15"), output_per_million_tokens=Decimal("0.60")
        ),
        "openai/gpt-4o": LlmPrice(
            input_per_million_tokens=Decimal("2.50"), output_per_million_tokens=Decimal("10.00")
        ),
    },
    stt={"openai": SttPrice(per_minute=Decimal("0.006"))},
    tts={
        "openai": TtsPrice(per_million_characters=Decimal("15.00")),
        "chatterbox": TtsPrice(per_million_characters=Decimal("0.00")),
    },
)


@dataclass(frozen=True, slots=True)
class Usage:
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_model: str | None = None
    llm_provider: str | None = None
    stt_audio_seconds: float = 0.0
    stt_provider: str | None = None
    tts_characters: int = 0
    tts_provider: str | None = None


def estimate_cost_micros(usage: Usage, prices: PriceTable) -> int:
    """The cost in millionths of a dollar, rounded half-up once, at the end."""
    total = Decimal(0)
    if usage.llm_input_tokens or usage.llm_output_tokens:
        llm = prices.llm.get(f"{usage.llm_provider}/{usage.llm_model}")
        if llm is None:
            logger.warning("no LLM price for %s/%s", usage.llm_provider, usage.llm_model)
        else:
            total += Decimal(usage.llm_input_tokens) * llm.input_per_million_tokens / MILLION
            total += Decimal(usage.llm_output_tokens) * llm.output_per_million_tokens / MILLION
    if usage.stt_audio_seconds:
        stt = prices.stt.get(usage.stt_provider or "")
        if stt is None:
            logger.warning("no STT price for %s", usage.stt_provider)
        else:
            # str() first: the float 92.3 is not the decimal 92.3. Multiplying before dividing
            # keeps a cost that ends in an exact half exact, so it rounds up as it should.
            seconds = Decimal(str(usage.stt_audio_seconds))
            total += seconds * stt.per_minute / SECONDS_PER_MINUTE
    if usage.tts_characters:
        tts = prices.tts.get(usage.tts_provider or "")
        if tts is None:
            logger.warning("no TTS price for %s", usage.tts_provider)
        else:
            total += Decimal(usage.tts_characters) * tts.per_million_characters / MILLION
    return int((total * MILLION).quantize(Decimal(1), rounding=ROUND_HALF_UP))
