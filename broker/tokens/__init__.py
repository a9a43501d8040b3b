"""Tokens: pure claim builders, the key lifecycle, and encryption at rest."""
