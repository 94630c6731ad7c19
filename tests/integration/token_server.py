"""A small, honest token server for the distribution registry's ``token`` auth (Docker's token protocol).

The registry answers an unauthenticated request with ``401`` and ``WWW-Authenticate: Bearer
realm=...,service=...,scope=repository:NAME:ACTIONS``; the client asks the realm for a token
(``GET /token?service=...&scope=...`` with its basic credentials, or none) and retries with
``Authorization: Bearer <token>``. The registry trusts a token only if it is a JWT whose ``x5c``
header carries a certificate from its ``rootcertbundle``, whose ``iss``/``aud`` are its issuer and
service, that is within ``nbf``..``exp``, and whose ``access`` claim lists the actions the request needs
(``[{"type": "repository", "name": ..., "actions": [...]}]``; distribution's
``registry/auth/token/token.go``).

This server checks the credentials for real (a wrong password is a 401, as Docker Hub's is), grants
each user only the actions it has, and grants an anonymous caller a token with no access at all, so
the registry itself refuses what it asks for. It records every token request, so a test can count them.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "ollama-magic-test-registry"
ISSUER = "ollama-magic-test-token-server"
TOKEN_LIFETIME_S = 300


@dataclass(frozen=True)
class User:
    password: str
    actions: frozenset[str]  # what this user may do on every repository: {"pull"} or {"pull", "push"}


@dataclass(frozen=True)
class TokenRequest:
    """One request the realm answered: who asked (None: anonymous), for which scopes, and the status."""

    account: str | None
    scopes: tuple[str, ...]
    status: int


class TokenServer:
    """``TokenServer(directory, users)`` on 127.0.0.1 (a free port) in a daemon thread; ``registry_auth``
    is the registry's ``auth: token:`` section that trusts it."""

    def __init__(self, directory: Path, users: Mapping[str, User]) -> None:
        self.users = dict(users)
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = _self_signed(self._key)
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_bundle = directory / "token-signer.pem"
        self.cert_bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.realm = f"http://127.0.0.1:{self._http.server_address[1]}/token"
        self._thread = threading.Thread(target=self._http.serve_forever, name="token-server", daemon=True)

    @property
    def registry_auth(self) -> dict[str, str]:
        return {"realm": self.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(self.cert_bundle)}

    def start(self) -> "TokenServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def taken(self) -> list[TokenRequest]:
        """The token requests answered so far, and forget them (each test counts its own)."""
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    # ---- the protocol -------------------------------------------------------------------------------

    def answer(self, query: Mapping[str, list[str]], authorization: str | None) -> tuple[int, dict, str | None]:
        """(status, JSON body, account) for ``GET /token?...``."""
        if query.get("service", [""])[0] != SERVICE:
            return 400, _errors("INVALID_REQUEST", "unknown service"), None
        account = None
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            user, _, password = _decode_basic(encoded) if scheme.lower() == "basic" else ("", "", "")
            known = self.users.get(user)
            if known is None or not secrets.compare_digest(known.password, password):
                return 401, _errors("UNAUTHORIZED", "invalid username or password"), user or None
            account = user
        granted = self.users[account].actions if account else frozenset()
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            actions = sorted(set(wanted.split(",")) & granted)
            if kind == "repository" and name and actions:
                access.append({"type": "repository", "name": name, "actions": actions})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": account or "", "aud": SERVICE, "iat": now, "nbf": now,
                  "exp": now + TOKEN_LIFETIME_S, "jti": secrets.token_hex(12), "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
        return 200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_S,
                     "issued_at": issued}, account

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _decode_basic(encoded: str) -> tuple[str, str, str]:
    try:
        return base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", "", ""


def _errors(code: str, message: str) -> dict:
    return {"errors": [{"code": code, "message": message}]}


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._send(404, _errors("NOT_FOUND", "no such path"))
                return
            query = parse_qs(url.query)
            status, body, account = server.answer(query, self.headers.get("Authorization"))
            server.record(TokenRequest(account, tuple(query.get("scope", [])), status))
            self._send(status, body)

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="ollama-magic test token server"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
