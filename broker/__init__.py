"""shotgrid-token-broker: an OAuth2/OpenID Connect token broker in front of ShotGrid."""

__version__ = "0.1.0"
