// The test SPA: one oidc-client-ts UserManager per client id, all on this origin.
// The test drives it through window.spa and reads #status.
"use strict";
(function () {
  const origin = window.location.origin;

  function manager(clientId) {
    return new oidc.UserManager({
      authority: window.BROKER_ISSUER,
      client_id: clientId,
      redirect_uri: origin + "/callback",
      post_logout_redirect_uri: origin + "/",
      response_type: "code",
      scope: "openid profile email",
      loadUserInfo: true,
      automaticSilentRenew: false,
      userStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
    });
  }

  function show(status, detail) {
    document.getElementById("status").textContent = status;
    document.getElementById("detail").textContent = detail ? JSON.stringify(detail) : "";
  }

  function summary(user) {
    return {
      sub: user.profile.sub,
      name: user.profile.name,
      preferred_username: user.profile.preferred_username,
      email: user.profile.email,
      access_token: user.access_token,
      refresh_token: user.refresh_token,
      id_token: user.id_token,
      client: sessionStorage.getItem("spa-client"),
    };
  }

  window.spa = {
    signIn(clientId) {
      sessionStorage.setItem("spa-client", clientId);
      return manager(clientId).signinRedirect({ state: { client: clientId } });
    },
    async refresh() {
      const user = await manager(sessionStorage.getItem("spa-client")).signinSilent();
      show("refreshed", summary(user));
      return summary(user);
    },
    async user() {
      const user = await manager(sessionStorage.getItem("spa-client")).getUser();
      return user ? summary(user) : null;
    },
    signOut() {
      return manager(sessionStorage.getItem("spa-client")).signoutRedirect({ state: "bye" });
    },
  };

  async function onLoad() {
    try {
      if (window.location.pathname === "/callback") {
        const user = await manager(sessionStorage.getItem("spa-client")).signinRedirectCallback();
        show("signed-in", summary(user));
      } else if (new URLSearchParams(window.location.search).has("state")) {
        show("signed-out");
      } else {
        show("ready");
      }
    } catch (err) {
      show("error", { message: String(err && err.message ? err.message : err) });
    }
  }
  onLoad();
})();
