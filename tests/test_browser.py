"""The shared browser fixture's one allowed skip: a missing Chromium outside CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser


@pytest.mark.parametrize(
    ("in_ci", "outcome"), [(True, pytest.fail.Exception), (False, pytest.skip.Exception)]
)
def test_a_missing_chromium_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_ci: bool, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(browser, "IN_CI", in_ci)
    with pytest.raises(outcome, match="headless Chromium is missing"):
        browser.require_chromium()


def test_a_present_chromium_is_required_quietly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "chromium").touch()
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(browser, "IN_CI", True)
    browser.require_chromium()
