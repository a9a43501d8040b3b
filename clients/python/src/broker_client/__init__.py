"""Validate shotgrid-token-broker access tokens offline (work in progress)."""

__all__: list[str] = []
