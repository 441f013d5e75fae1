"""A real OAuth 2.1 authorization server for the MCP OAuth tests, built with Authlib (Flask).

    python tests/oauth_as.py --port 9000 --resource http://127.0.0.1:10000/mcp

- RFC 8414 metadata at /.well-known/oauth-authorization-server, JWKS at /jwks;
- authorization code + PKCE (S256, required) for the pre-registered public client
  `mcp-test-client`; the authorization endpoint auto-approves the user named by
  `login_hint` (alice or bob) and redirects with the code;
- access tokens are RS256 JWTs: iss = this server, sub = the user, aud = the `resource`
  asked for (RFC 8707), else the configured resource;
- RFC 8693 token exchange (a grant class registered on Authlib's AuthorizationServer) for the
  confidential client `tollgate-gateway` (client_secret_basic): the subject token must be one
  of this server's access tokens for the gateway's resource, not of a revoked subject (else
  `invalid_request`), and the
  new token's aud is the requested `audience` (one of the known MCP servers);
- test-only: GET /_stats -> {"token_exchange": n, "issued": [...]}, POST /_stats/reset;
  GET /_token?sub=..&aud=..&exp_in=.. mints a token directly (for "another audience" cases).
"""
from __future__ import annotations

import argparse
import base64
import os
import secrets
import time

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on 127.0.0.1 in tests

import jwt as pyjwt
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc7636 import CodeChallenge
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
USERS = {"alice", "bob"}
EXCHANGE_AUDIENCES = {"demo-mcp"}
# Subjects whose tokens still verify at the gateway but that this server no longer exchanges
# (say, access revoked since the token was issued): the exchange answers invalid_request.
REVOKED = {"revoked-user"}

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--resource", required=True, help="the gateway's resource identifier")
parser.add_argument("--redirect-uri", default="http://127.0.0.1:1/callback")
parser.add_argument("--gateway-secret", default="gateway-secret")
args = parser.parse_args()

ISSUER = f"http://127.0.0.1:{args.port}"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


NUMBERS = KEY.public_key().public_numbers()
JWKS = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "as-1", "n": b64u(NUMBERS.n), "e": b64u(NUMBERS.e)}]}
stats: dict = {"token_exchange": 0, "issued": []}


def mint(sub: str, aud: str, expires_in: int = 600, **extra) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + expires_in, "jti": secrets.token_hex(8), **extra}
    return pyjwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "as-1"})


class Client(ClientMixin):
    def __init__(self, client_id, secret, redirect_uris, grant_types, auth_method):
        self.client_id, self.secret, self.redirect_uris = client_id, secret, redirect_uris
        self.grant_types, self.auth_method = grant_types, auth_method

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return self.secret is not None and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method == self.auth_method

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


CLIENTS = {
    "mcp-test-client": Client("mcp-test-client", None, [args.redirect_uri], ["authorization_code"], "none"),
    "tollgate-gateway": Client("tollgate-gateway", args.gateway_secret, [], [TOKEN_EXCHANGE], "client_secret_basic"),
}


class Code:
    def __init__(self, code, client_id, redirect_uri, scope, user, challenge, method, resource):
        self.code, self.client_id, self.redirect_uri, self.scope, self.user = code, client_id, redirect_uri, scope, user
        self.code_challenge, self.code_challenge_method, self.resource = challenge, method, resource

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


CODES: dict[str, Code] = {}


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def save_authorization_code(self, code, req):
        data = req.payload.data
        CODES[code] = Code(code, req.client.get_client_id(), req.payload.redirect_uri, req.payload.scope or "",
                           req.user, data.get("code_challenge"), data.get("code_challenge_method"), data.get("resource"))

    def query_authorization_code(self, code, client):
        item = CODES.get(code)
        return item if item and item.client_id == client.get_client_id() else None

    def delete_authorization_code(self, authorization_code):
        CODES.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    """RFC 8693 on Authlib's grant machinery: client authentication, error responses and the
    token response are Authlib's."""
    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("client may not exchange tokens")
        form = self.request.form
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError("unsupported subject_token_type")
        try:
            claims = pyjwt.decode(form.get("subject_token", ""), KEY.public_key(), algorithms=["RS256"],
                                  audience=args.resource, issuer=ISSUER)
        except pyjwt.PyJWTError as e:
            raise InvalidRequestError(f"invalid subject_token: {e}")
        if claims["sub"] in REVOKED:
            raise InvalidRequestError("subject_token revoked")
        audience = form.get("audience")
        if audience not in EXCHANGE_AUDIENCES:
            raise InvalidRequestError("unknown audience")
        self.request.client = client
        self.request.user = claims["sub"]

    def create_token_response(self):
        stats["token_exchange"] += 1
        token = self.generate_token(user=self.request.user, scope=self.request.form.get("scope"), include_refresh_token=False)
        token["issued_token_type"] = ACCESS_TOKEN_TYPE
        return 200, token, self.TOKEN_RESPONSE_HEADER


def generate_token(grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
    form = request.form
    aud = form.get("audience") if grant_type == TOKEN_EXCHANGE else (form.get("resource") or args.resource)
    token = mint(user, aud, 600, client_id=client.get_client_id(), **({"scope": scope} if scope else {}))
    stats["issued"].append({"grant_type": grant_type, "sub": user, "aud": aud, "token": token})
    return {"access_token": token, "token_type": "Bearer", "expires_in": 600, **({"scope": scope} if scope else {})}


app = Flask(__name__)
server = AuthorizationServer(app, query_client=CLIENTS.get, save_token=lambda token, req: None)
server.register_token_generator("default", generate_token)
server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
server.register_grant(TokenExchangeGrant)


@app.get("/.well-known/oauth-authorization-server")
def metadata():
    return jsonify({
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", TOKEN_EXCHANGE],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
    })


@app.get("/jwks")
def jwks():
    return jsonify(JWKS)


@app.get("/authorize")
def authorize():
    user = request.args.get("login_hint")
    if user not in USERS:
        return jsonify({"error": "access_denied"}), 403
    return server.create_authorization_response(grant_user=user)


@app.post("/token")
def token():
    return server.create_token_response()


@app.get("/_stats")
def get_stats():
    return jsonify(stats)


@app.post("/_stats/reset")
def reset_stats():
    stats["token_exchange"] = 0
    stats["issued"].clear()
    return jsonify({})


@app.get("/_token")
def direct_token():
    return jsonify({"access_token": mint(request.args["sub"], request.args["aud"], int(request.args.get("exp_in", "600")))})


if __name__ == "__main__":
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host="127.0.0.1", port=args.port, threaded=True)
