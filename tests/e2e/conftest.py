"""Fixtures for the emulator tests (shared from tests/support/emulator.py)."""

from tests.support.emulator import clock, emulator, site

__all__ = ["clock", "emulator", "site"]
