"""The transcript's order does not depend on how the database happened to aggregate it."""

from __future__ import annotations

from transcripts.db.hot_read import _ordered
from transcripts.domain import Turns


def test_out_of_order_aggregates_are_put_in_order() -> None:
    scrambled = Turns(
        turn_index=[2, 0, 1],
        role=["assistant", "assistant", "user"],
        text=["c", "a", "b"],
        ts=[3.0, 1.0, 2.0],
        speaking_duration_seconds=[None, 0.5, 1.5],
        was_interrupted=[True, False, False],
    )
    assert _ordered(scrambled) == Turns(
        turn_index=[0, 1, 2],
        role=["assistant", "user", "assistant"],
        text=["a", "b", "c"],
        ts=[1.0, 2.0, 3.0],
        speaking_duration_seconds=[0.5, 1.5, None],
        was_interrupted=[False, False, True],
    )


def test_ordered_input_is_returned_as_is() -> None:
    turns = Turns(
        [0, 1], ["assistant", "user"], ["a", "b"], [0.0, 1.0], [None, None], [False, False]
    )
    assert _ordered(turns) is turns
