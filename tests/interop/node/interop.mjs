// Drives a running broker with Node's stock OpenID Connect client (openid-client 6, on
// oauth4webapi) and verifies its access tokens with jose the way a Node resource server
// would. Every library check (issuer match, ID token signature and claims, PKCE, state,
// nonce, JSON content types, userinfo subject) is the library's own; this script only
// adds what the contract promises on top.
//
//   node interop.mjs ISSUER   -> prints one JSON object of findings, exits 1 on a failure
import assert from "node:assert/strict";
import * as client from "openid-client";
import * as jose from "jose";

const issuer = new URL(process.argv[2]);
const insecure = { execute: [client.allowInsecureRequests] };
const findings = {};

async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof client.ResponseBodyError) {
      return { status: err.status, error: err.error, description: err.error_description };
    }
    if (err instanceof client.WWWAuthenticateChallengeError) {
      // a 401 with a challenge (RFC 6749 §5.2 invalid_client): the library raises this
      const { scheme, parameters } = err.cause[0];
      return { status: err.status, scheme, error: parameters.error, description: parameters.error_description };
    }
    throw err;
  }
  throw new Error("expected an OAuth error response, got success");
}

function cookieHeader(response) {
  return response.headers
    .getSetCookie()
    .map((line) => line.split(";", 1)[0])
    .join("; ");
}

// The login page is the broker's own HTML form: fill it in as a browser would. Returns the
// redirect to the client and the cookies the browser now holds (its broker session).
async function signIn(authorizationUrl, username, password) {
  const page = await fetch(authorizationUrl, { redirect: "manual" });
  assert.equal(page.status, 200, "GET /authorize renders the login page");
  const html = await page.text();
  const action = html.match(/<form method="post" action="([^"]+)"/)[1];
  const form = new URLSearchParams();
  for (const [, name, value] of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    form.append(name, value.replaceAll("&amp;", "&").replaceAll("&#34;", '"').replaceAll("&#39;", "'"));
  }
  form.append("username", username);
  form.append("password", password);
  const submitted = await fetch(action, {
    method: "POST",
    body: form,
    redirect: "manual",
    headers: { cookie: cookieHeader(page) },
  });
  assert.ok([302, 303].includes(submitted.status), `login answers a redirect, got ${submitted.status}`);
  return { callback: new URL(submitted.headers.get("location")), cookie: cookieHeader(submitted) };
}

// --- discovery, as a public client (dna-cli) -------------------------------------------
const cli = await client.discovery(issuer, "dna-cli", undefined, client.None(), insecure);
const meta = cli.serverMetadata();
assert.equal(meta.issuer, issuer.href.replace(/\/$/, ""));
for (const grant of [
  "password",
  "refresh_token",
  "authorization_code",
  "client_credentials",
  "urn:ietf:params:oauth:grant-type:token-exchange",
]) {
  assert.ok(meta.grant_types_supported.includes(grant), `grant_types_supported has ${grant}`);
}
assert.ok(meta.code_challenge_methods_supported.includes("S256"));
findings.discovery = { issuer: meta.issuer, jwks_uri: meta.jwks_uri };
// RFC 8414's document too, as openid-client reads it for plain OAuth 2.0 servers.
const oauthOnly = await client.discovery(issuer, "dna-cli", undefined, client.None(), {
  ...insecure,
  algorithm: "oauth2",
});
assert.equal(oauthOnly.serverMetadata().token_endpoint, meta.token_endpoint);

// --- password grant, ID token checked by the library ------------------------------------
const login = await client.genericGrantRequest(cli, "password", {
  username: "alice",
  password: "alice-pw",
  scope: "openid profile email offline_access",
});
const idClaims = login.claims();
assert.equal(idClaims.sub, "101");
assert.equal(idClaims.aud, "dna-cli");
assert.equal(login.token_type.toLowerCase(), "bearer");
assert.ok(login.refresh_token, "a refresh token");
findings.password = {
  sub: idClaims.sub,
  expires_in: login.expiresIn(),
  scope: login.scope,
  id_token_alg: jose.decodeProtectedHeader(login.id_token).alg,
};

// --- the access token, verified offline as a Node resource server would ---------------
const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
const { payload: at, protectedHeader } = await jose.jwtVerify(login.access_token, jwks, {
  issuer: meta.issuer,
  audience: "dna-api",
  typ: "at+jwt",
});
assert.equal(at.sub, "101");
assert.equal(at.client_id, "dna-cli");
assert.equal(at.sg_login, "alice");
assert.equal(at.sg_user_id, 101);
assert.equal(typeof at.sid, "string");
findings.access_token = { alg: protectedHeader.alg, kid: protectedHeader.kid, aud: at.aud };

// A refresh token never passes where an access token is expected.
const asAccess = await jose
  .jwtVerify(login.refresh_token, jwks, { issuer: meta.issuer, audience: "dna-api", typ: "at+jwt" })
  .then(() => "accepted", (err) => err.code);
assert.notEqual(asAccess, "accepted");
findings.refresh_as_access = asAccess;

// --- userinfo (subject checked by the library) ------------------------------------------
const info = await client.fetchUserInfo(cli, login.access_token, idClaims.sub);
assert.equal(info.preferred_username, "alice");
assert.equal(info.email, "alice@example.com");
findings.userinfo = info;

// --- refresh: rotation, and the grace window's same successor ---------------------------
const rotated = await client.refreshTokenGrant(cli, login.refresh_token);
assert.notEqual(rotated.refresh_token, login.refresh_token);
assert.equal(rotated.claims()?.sub ?? "101", "101");
const replay = await client.refreshTokenGrant(cli, login.refresh_token);
assert.equal(replay.refresh_token, rotated.refresh_token, "within the grace, the same successor");
findings.refresh = { rotated: true, same_successor_in_grace: true };

// --- refusals, as the library surfaces them -----------------------------------------------
findings.wrong_password = await refusal(
  client.genericGrantRequest(cli, "password", { username: "alice", password: "nope" }),
);
assert.equal(findings.wrong_password.error, "invalid_grant");
findings.inactive_user = await refusal(
  client.genericGrantRequest(cli, "password", { username: "carol", password: "carol-pw" }),
);
assert.equal(findings.inactive_user.error, "invalid_grant");

// --- revocation by the public client, then the family is gone --------------------------
await client.tokenRevocation(cli, rotated.refresh_token);
findings.refresh_after_revoke = await refusal(client.refreshTokenGrant(cli, rotated.refresh_token));
assert.equal(findings.refresh_after_revoke.error, "invalid_grant");

// --- the confidential client, both secret methods ---------------------------------------
for (const [method, auth] of [
  ["client_secret_basic", client.ClientSecretBasic("dna-backend-secret")],
  ["client_secret_post", client.ClientSecretPost("dna-backend-secret")],
]) {
  const backend = await client.discovery(issuer, "dna-backend", undefined, auth, insecure);
  const own = await client.clientCredentialsGrant(backend, {});
  assert.ok(own.access_token);
  const fresh = await client.genericGrantRequest(cli, "password", {
    username: "bob",
    password: "bob-pw",
  });
  const active = await client.tokenIntrospection(backend, fresh.access_token);
  assert.equal(active.active, true);
  assert.equal(active.sub, "102");
  const exchanged = await client.genericGrantRequest(
    backend,
    "urn:ietf:params:oauth:grant-type:token-exchange",
    {
      subject_token: fresh.access_token,
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      audience: "review-api",
    },
  );
  const { payload: ex } = await jose.jwtVerify(exchanged.access_token, jwks, {
    issuer: meta.issuer,
    audience: "review-api",
    typ: "at+jwt",
  });
  assert.deepEqual(ex.act, { sub: "dna-backend" });
  await client.tokenRevocation(cli, fresh.refresh_token);
  const inactive = await client.tokenIntrospection(backend, fresh.access_token);
  assert.equal(inactive.active, false, "revoking the family deactivates its access tokens");
  findings[method] = { client_credentials: true, introspection: true, exchange_act: ex.act };
}
findings.introspection_without_auth = await refusal(
  client.tokenIntrospection(cli, login.access_token),
);
assert.equal(findings.introspection_without_auth.error, "invalid_client");

// --- authorization code + PKCE (S256), login page, nonce, then RP-initiated logout ------
const redirectUri = "http://127.0.0.1:53682/callback"; // RFC 8252: any loopback port
const spa = await client.discovery(
  issuer,
  "dna-frontend",
  { redirect_uris: [redirectUri] },
  client.None(),
  insecure,
);
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const authorizationUrl = client.buildAuthorizationUrl(spa, {
  redirect_uri: redirectUri,
  scope: "openid profile email",
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
  nonce,
});
const { callback, cookie: browserCookie } = await signIn(authorizationUrl, "bob", "bob-pw");
assert.equal(callback.origin + callback.pathname, redirectUri);
const codeTokens = await client.authorizationCodeGrant(spa, callback, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const codeClaims = codeTokens.claims();
assert.equal(codeClaims.sub, "102");
assert.equal(codeClaims.nonce, nonce);
const codeRefresh = await client.refreshTokenGrant(spa, codeTokens.refresh_token);
assert.ok(codeRefresh.access_token);
findings.authorization_code = { sub: codeClaims.sub, nonce_echoed: true, refreshed: true };

const logoutUrl = client.buildEndSessionUrl(spa, {
  id_token_hint: codeTokens.id_token,
  post_logout_redirect_uri: "http://127.0.0.1:53682/",
  state: "bye",
});
// From the browser that signed in (its session cookie): a hint for another browser's
// session, or from none, gets a confirmation page instead (RP-Initiated Logout §2).
const logout = await fetch(logoutUrl, { redirect: "manual", headers: { cookie: browserCookie } });
findings.end_session = { status: logout.status, location: logout.headers.get("location") };

console.log(JSON.stringify(findings));
