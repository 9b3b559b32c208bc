"""The malloc tuning that keeps functional optimizer steps from page-faulting (core.allocator)."""

from __future__ import annotations

import platform

import pytest

from progsynth.core.allocator import keep_freed_memory


def test_applies_on_glibc_and_respects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    if platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False  # a user's own malloc settings win
