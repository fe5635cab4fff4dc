// Local OpenID Connect provider for the test suite, built on the certified
// `oidc-provider` npm package (v9, ESM-only).
//
//   OIDC_PROVIDER_MODULE=/abs/path/node_modules/oidc-provider node provider.mjs config.json
//
// config.json: { port, issuer, keysFile, resource, accessTokenAlg ("RS256"|"ES256"),
//   accessTokenTtl, idTokenTtl, [refreshTokenTtl = 86400], clients: [{ client_id,
//   redirect_uris, post_logout_redirect_uris }], users: [{ sub, login, password, name, email }] }
//
// Prints exactly one stdout line, "oidc-provider ready <issuer>", once listening; everything
// else goes to stderr. Exits on SIGTERM/SIGINT and when stdin reaches EOF (parent died), so
// the parent must spawn it with a *piped* stdin that it keeps open.
// Extra test-only endpoint: POST /__test/rotate -> {"kid": "<new signing kid>"}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// ---- keep stdout clean: oidc-provider prints dev notices with console.info (= stdout) and
// warnings (e.g. "Unsupported runtime" on Node < 22) with console.warn. Drop those, send the rest to stderr.
const noise = /^oidc-provider (NOTICE|WARNING: Unsupported runtime)/;
for (const m of ['log', 'info', 'warn']) {
  console[m] = (...a) => { if (!noise.test(String(a[0]))) console.error(...a); };
}

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const modDir = process.env.OIDC_PROVIDER_MODULE;
if (!modDir) throw new Error('OIDC_PROVIDER_MODULE (oidc-provider package dir) is not set');
// package.json has "main": "lib/index.js" and no "exports" map, so deep imports work too.
const imp = (rel) => import(pathToFileURL(path.join(modDir, rel)).href);
const { default: Provider, errors } = await imp('lib/index.js');
// The default in-memory adapter store is per Provider instance; we create ONE store and share
// it between all instances so sessions, interactions, grants and tokens survive key rotation.
const { createMemoryAdapter } = await imp('lib/adapters/memory_adapter.js');
const adapter = createMemoryAdapter(15 /* = clockTolerance */);
const cookieKeys = [crypto.randomBytes(32).toString('base64url')]; // same for all instances

// ---- keys -----------------------------------------------------------------------------
const keys = []; // newest first; { kid, alg, privateKey: KeyObject }
function newKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const key = { kid: crypto.randomBytes(12).toString('base64url'), alg, privateKey };
  keys.unshift(key); // first matching key is the one oidc-provider signs with
  return key;
}
const jwk = (k, priv) => ({
  ...crypto.createPublicKey(k.privateKey).export({ format: 'jwk' }),
  ...(priv ? k.privateKey.export({ format: 'jwk' }) : {}),
  kid: k.kid, alg: k.alg, use: 'sig',
});
function writeKeysFile() { // atomic: write temp file, then rename
  const out = keys.map((k) => ({
    kid: k.kid, alg: k.alg,
    privatePem: k.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    // DER as the Rust tests read it: PKCS#1 for RSA, PKCS#8 for EC, base64.
    privateDer: k.privateKey
      .export({ type: k.alg === 'ES256' ? 'pkcs8' : 'pkcs1', format: 'der' })
      .toString('base64'),
    publicJwk: jwk(k, false),
  }));
  const tmp = `${cfg.keysFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ keys: out }, null, 2));
  fs.renameSync(tmp, cfg.keysFile);
}
const signingKid = (alg) => keys.find((k) => k.alg === alg).kid;

// ---- accounts -------------------------------------------------------------------------
const users = cfg.users ?? [];
async function findAccount(_ctx, sub) {
  const u = users.find((x) => x.sub === sub);
  if (!u) return undefined;
  return {
    accountId: u.sub,
    claims: async () => ({ sub: u.sub, name: u.name, email: u.email, email_verified: true }),
  };
}

// ---- provider factory (a new instance per key set) -------------------------------------
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;
const allScopes = 'openid profile email offline_access';

function makeProvider() {
  const provider = new Provider(cfg.issuer, {
    adapter,
    jwks: { keys: keys.map((k) => jwk(k, true)) },
    cookies: { keys: cookieKeys }, // plain http: cookies are only marked Secure when ctx.secure
    clients: cfg.clients.map((c) => ({
      ...c,
      application_type: 'web',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    })),
    findAccount,
    claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
    scopes: allScopes.split(' '),
    conformIdTokenClaims: false, // put profile/email claims into the ID token itself
    pkce: { required: () => true }, // only S256 is supported by oidc-provider v9
    // Browser app on another origin: allow the client's redirect_uri origins (token endpoint).
    // Discovery and JWKS endpoints are open CORS ("*"/echo) anyway.
    clientBasedCORS: (_ctx, origin, client) => [...client.redirectUris, ...(client.postLogoutRedirectUris ?? [])]
      .some((u) => URL.parse(u)?.origin === origin),
    // Refresh tokens for every client allowed to use the grant (offline_access not required),
    // rotated on every use; re-use of a rotated one is refused AND revokes the whole grant.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: cfg.accessTokenTtl,
      IdToken: cfg.idTokenTtl,
      RefreshToken: cfg.refreshTokenTtl ?? 86400,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: (ctx, out) => { // plain error page (the default one pulls in Google fonts)
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
    },
    features: {
      devInteractions: { enabled: false }, // we serve our own login page below
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => cfg.resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== cfg.resource) throw new errors.InvalidTarget();
          return {
            audience: cfg.resource,
            scope: allScopes,
            accessTokenFormat: 'jwt',
            accessTokenTTL: cfg.accessTokenTtl,
            jwt: { sign: { alg: cfg.accessTokenAlg, kid: signingKid(cfg.accessTokenAlg) } },
          };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        // `form` is <form id="op.logoutForm" ...><input name="xsrf" ...></form>. Add logout=yes
        // (= end the whole OP session) and a fallback button; submit it by script.
        logoutSource: async (ctx, form) => {
          ctx.body = page('Sign out', form.replace('</form>',
            '<input type="hidden" name="logout" value="yes"/>'
            + '<button type="submit" id="logout-confirm">Sign out</button></form>')
            + '<script>document.getElementById("op.logoutForm").submit()</script>');
        },
        // only shown when no post_logout_redirect_uri was given
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<h1 id="logged-out">Signed out</h1>');
        },
      },
    },
  });
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
    'userinfo.error', 'jwks.error', 'discovery.error', 'revocation.error']) {
    provider.on(ev, (_ctx, err) => {
      if (ev === 'server_error') console.error('oidc-provider server_error:', err);
      else console.error(`oidc-provider ${ev}: ${err.error ?? err.name} (${[err.error_description ?? err.message, err.error_detail].filter(Boolean).join(': ')})`);
    });
  }
  return { provider, handler: provider.callback() };
}

// ---- interaction (login + automatic consent) routes -------------------------------------
const loginForm = (uid, login = '', error = '') => page('Sign in', `<h1>Sign in</h1>
${error ? `<p id="error" class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label for="login">Login</label> <input id="login" name="login" type="text" value="${esc(login)}" autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password">
<button type="submit" id="sign-in">Sign in</button>
</form>`);

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}
function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (req.method === 'GET' && !action && prompt.name === 'login') {
    return send(res, 200, 'text/html; charset=utf-8', loginForm(uid));
  }
  if (req.method === 'GET' && !action && prompt.name === 'consent') {
    // first-party client: grant whatever is missing without asking
    // (the session's grant may be gone, e.g. revoked after refresh-token reuse: start a new one)
    const existing = details.grantId && await provider.Grant.find(details.grantId);
    const grant = existing || new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [rs, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(rs, scopes.join(' '));
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: existing ? {} : { grantId } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const user = users.find((u) => u.login === form.get('login'));
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, 'text/html; charset=utf-8', loginForm(uid, form.get('login'), 'Invalid login or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  return send(res, 400, 'text/plain', `unexpected ${req.method} for prompt ${prompt.name}\n`);
}

// ---- HTTP server: test routes + interactions, everything else -> current provider --------
newKey('RS256');
newKey('ES256');
writeKeysFile();
let current = makeProvider();

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, cfg.issuer);
  try {
    if (req.method === 'POST' && pathname === '/__test/rotate') {
      const { kid } = newKey(cfg.accessTokenAlg);
      writeKeysFile();
      current = makeProvider(); // new JWKS; adapter + cookie keys are shared
      return send(res, 200, 'application/json', JSON.stringify({ kid }));
    }
    const m = pathname.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
    if (m) return await interaction(current.provider, req, res, m[1], m[2]);
    return current.handler(req, res);
  } catch (err) {
    if (err instanceof errors.SessionNotFound) {
      return send(res, 400, 'text/plain', `interaction session not found or expired: ${err.error_description ?? err.message}\n`);
    }
    console.error('oidc-provider test server error:', err);
    if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n');
    else res.end();
  }
});

server.on('error', (err) => { console.error('oidc-provider: listen failed:', err.message); process.exit(1); });
server.listen(cfg.port, '127.0.0.1', () => {
  process.stdout.write(`oidc-provider ready ${cfg.issuer}\n`);
});

// ---- lifecycle ----------------------------------------------------------------------------
const exit = (why) => {
  if (why) console.error(`oidc-provider: ${why}, exiting`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', () => exit());
process.on('SIGINT', () => exit());
process.stdin.on('end', () => exit('stdin closed'));
process.stdin.on('close', () => exit('stdin closed'));
process.stdin.on('error', () => exit('stdin error'));
process.stdin.resume();
