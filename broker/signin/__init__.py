"""Signing a person in on the broker's pages, below HTTP: the App Session Launcher
(`launcher.py`) and the two-factor step of a Legacy Login (`twofactor.py`).

The password step itself is `broker.grants.password.password_login`, shared with the
password grant; `broker/http/signin.py` puts the steps together for any page that needs a
signed-in person (the authorization endpoint, the device verification page).
"""
