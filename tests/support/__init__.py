"""Shared test support: real servers on free loopback ports."""
