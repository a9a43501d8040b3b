"""Revocation that reaches every service within seconds (issue 15): the revocation feed
(`feed`), OIDC Back-Channel Logout delivery from the store's outbox (`backchannel`) and
the ShotGrid event-log watcher that ends deactivated users' sessions (`watcher`).

The entries and notices themselves are written by the store in the same step as the
change they describe (`broker.store`); these parts only read, deliver and watch.
"""
