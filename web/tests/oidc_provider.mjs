// A real OpenID provider for the Rust integration tests: panva's oidc-provider (npm, a
// certified implementation), on 127.0.0.1, with one client and no questions asked: whoever
// comes to sign in is the user in <dir>/user.json ({"sub", "email", "roles", "amr"}), re-read
// at each sign-in, and consent is granted. PKCE (S256) is required.
//
//   node web/tests/oidc_provider.mjs <port> <client-id> <redirect-uri> <dir>
//   → "listening" once it serves; the issuer is http://127.0.0.1:<port>
import http from "node:http";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, clientId, redirectUri, dir] = process.argv.slice(2);
const user = () => JSON.parse(readFileSync(`${dir}/user.json`, "utf8"));
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: "none",
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
  }],
  pkce: { required: () => true },
  scopes: ["openid", "email", "roles"],
  claims: { openid: ["sub", "amr"], email: ["email"], roles: ["roles"] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ["datasandbox-tests"] },
  async findAccount(ctx, id) {
    const u = user();
    return { accountId: id, async claims() { return { sub: id, email: u.email, roles: u.roles }; } };
  },
});
provider.on("server_error", (ctx, error) => process.stderr.write(`server_error ${error.stack}\n`));

// Sign-in and consent without asking: the user is whoever user.json says.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const u = user();
  if (details.prompt.name === "login") {
    return provider.interactionFinished(req, res, { login: { accountId: u.sub, amr: u.amr } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) grant.addResourceScope(indicator, scopes.join(" "));
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith("/interaction/")) {
    interaction(req, res).catch((error) => { process.stderr.write(`${error.stack}\n`); res.statusCode = 500; res.end(String(error)); });
  } else {
    callback(req, res);
  }
}).listen(Number(port), "127.0.0.1", () => process.stdout.write("listening\n"));
