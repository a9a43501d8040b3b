"""Helpers for device-flow tests: start a device authorization, and play the person who
signs in on the verification page and approves or denies, over HTTP with httpx keeping
the cookies (as a browser would)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from broker_client.login import DeviceLogin, DevicePrompt
from broker_client.tokencache import TokenCache

from tests.support.broker import RunningBroker
from tests.support.clock import MovableClock
from tests.support.oidc import hidden_fields, submit_login

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def authorize_device(
    http: httpx.Client, client_id: str = "dna-cli", scope: str | None = None
) -> dict[str, Any]:
    data = {"client_id": client_id}
    if scope is not None:
        data["scope"] = scope
    response = http.post("/device_authorization", data=data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(http: httpx.Client, device_code: str, client_id: str = "dna-cli") -> httpx.Response:
    return http.post(
        "/token",
        data={"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id},
    )


def sign_in_on_device_page(
    http: httpx.Client, user_code: str | None, username: str = "alice"
) -> httpx.Response:
    """GET /device (the login page when not signed in), sign in with the password, follow
    back to the verification page; returns that page."""
    params = {"user_code": user_code} if user_code else {}
    page = http.get("/device", params=params)
    assert page.status_code == 200, page.text
    if 'name="password"' in page.text:
        done = submit_login(http, page, username, f"{username}-pw", path="/device")
        assert done.status_code == 302, done.text
        page = http.get(done.headers["location"])
        assert page.status_code == 200, page.text
    return page


def decide(
    http: httpx.Client, page: httpx.Response, user_code: str, action: str = "approve"
) -> httpx.Response:
    csrf = hidden_fields(page.text)["csrf_token"]
    return http.post("/device", data={"csrf_token": csrf, "user_code": user_code, "action": action})


def approve(
    http: httpx.Client, user_code: str, username: str = "alice", action: str = "approve"
) -> httpx.Response:
    page = sign_in_on_device_page(http, user_code, username)
    return decide(http, page, user_code, action)


class PollingDevice:
    """`broker_client.login`'s DeviceLogin on its own thread, as a DCC plug-in runs it,
    whose waits move the broker's clock plus `real_wait` seconds of real time, so the test
    thread (or a browser) can act between polls."""

    def __init__(
        self,
        running: RunningBroker,
        clock: MovableClock,
        cache: TokenCache,
        *,
        real_wait: float = 0.05,
    ) -> None:
        self.prompted = threading.Event()
        self.prompt: DevicePrompt | None = None
        self.result: Any = None
        self.clock = clock
        self.real_wait = real_wait
        self.login = DeviceLogin(
            running.url,
            "dna-cli",
            cache=cache,
            on_prompt=self._on_prompt,
            sleep=self._sleep,
            clock=lambda: clock().timestamp(),
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_prompt(self, prompt: DevicePrompt) -> None:
        self.prompt = prompt
        self.prompted.set()

    def _sleep(self, seconds: float) -> None:
        threading.Event().wait(self.real_wait)
        self.clock.advance(seconds)

    def _run(self) -> None:
        try:
            self.result = self.login.access_token()
        except Exception as exc:
            self.result = exc
        finally:
            self.login.close()

    def start(self) -> DevicePrompt:
        """Start polling; the prompt (URL and code) once the device has one."""
        self.thread.start()
        assert self.prompted.wait(10)
        assert self.prompt is not None
        return self.prompt

    def finish(self) -> Any:
        """The access token, or the exception `access_token()` raised."""
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result
