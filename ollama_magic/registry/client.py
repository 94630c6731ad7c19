"""Talking to one registry: where a name lives, authentication, and errors in one line.

Registries answer 401 with a ``WWW-Authenticate`` challenge: ``Bearer realm=...,service=...,scope=...``
(registry.ollama.ai, hf.co, the distribution registry's token auth) means "get a token from the realm
and retry"; ``Basic`` (the distribution registry's htpasswd auth) means "send the credentials". As in
Ollama (``server/images.go`` ``makeRequestWithRetry``), a request is retried once after a challenge.
Credentials come from ``OLLAMA_MAGIC_REGISTRY_AUTH=user:password`` unless passed in.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import httpx
import urllib3

from .. import envconfig
from ..errors import InvalidRequest, NotFound, RegistryError, Unauthorized
from ..names import ModelName

AUTH_ENV = envconfig.registry_auth.name
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
USER_AGENT = "ollama-magic (Ollama registry protocol)"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class RegistryRef:
    """A model name plus the scheme its registry is reached with (``http`` only when insecure)."""

    name: ModelName
    scheme: str

    @classmethod
    def parse(cls, text: str, *, insecure: bool = False) -> "RegistryRef":
        """``gemma3``, ``hf.co/user/repo:Q4_K_M``, ``host:port/ns/model:tag``, ``http://host/ns/m``.

        A name spelled with ``http://`` needs ``insecure``, as in Ollama; ``insecure`` alone also
        switches an unspelled scheme to plain http (Ollama's ``--insecure``)."""
        scheme = "https"
        if "://" in text:
            scheme, _, rest = text.partition("://")
            scheme = scheme.lower()
            if scheme not in ("http", "https"):
                raise InvalidRequest(f"unsupported protocol scheme {scheme!r} in {text!r}")
            if scheme == "http" and not insecure:
                raise InvalidRequest("insecure protocol http: pass insecure (--insecure) to use plain http")
            text = rest
        if insecure:
            scheme = "http"
        return cls(ModelName.parse(text), scheme)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.name.host}"

    @property
    def repository(self) -> str:
        return f"{self.name.namespace}/{self.name.model}"

    def url(self, *path: str) -> str:
        return "/".join([self.base_url, "v2", self.repository, *path])


def credentials_from_env() -> tuple[str, str] | None:
    value = envconfig.registry_auth()
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep:
        raise InvalidRequest(f"{AUTH_ENV} must be user:password")
    return user, password


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` -> ("bearer", {"realm": …, …})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class RegistryClient:
    """One client per pull or push; safe to share between the part-download threads.

    Manifests, tokens and uploads go through httpx. Blob bodies, the one large transfer, are read
    through urllib3, whose ``readinto`` goes from the socket straight into the caller's buffer:
    httpx parses bodies in pure Python (h11) and measured at about 0.45x of ``curl`` on a local
    registry, urllib3 at about curl's speed (docs/BENCHMARKS.md, row 9)."""

    def __init__(self, ref: RegistryRef, *, auth: tuple[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.ref = ref
        self.credentials = auth if auth is not None else credentials_from_env()
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        # Redirects are followed (registry.ollama.ai sends blobs to a CDN); urllib3 drops the
        # Authorization header when a redirect leaves the host. No retries here: the caller retries
        # a part from where it stopped.
        self.blob_http = urllib3.PoolManager(
            maxsize=32, headers={"User-Agent": USER_AGENT},
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10),
        )
        self._auth_header: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()
        self.blob_http.clear()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------------

    def send(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
             content: bytes | Iterable[bytes] | None = None, stream: bool = False,
             params: Mapping[str, str] | None = None, what: str = "") -> httpx.Response:
        """A request, retried once after an auth challenge; 4xx/5xx become our errors.

        ``content`` given as an iterable can be sent only once, so uploads of files first make a
        cheap authenticated request (the upload session's POST) and pass bytes or a fresh iterator."""
        for attempt in range(2):
            request_headers = dict(headers or {})
            if self._auth_header:
                request_headers["Authorization"] = self._auth_header
            try:
                request = self.http.build_request(method, url, headers=request_headers, content=content,
                                                  params=params)
                response = self.http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                raise RegistryError(f"cannot reach the registry {self.ref.name.host}: {_reason(exc)}") from None
            if response.status_code == 401 and attempt == 0 and self._answer_challenge(response.headers):
                response.close()
                continue
            if response.status_code >= 400:
                try:
                    response.read()
                except httpx.HTTPError:
                    pass
                raise self._error(response.status_code, _body(response), response.headers, what)
            return response
        raise AssertionError("unreachable")

    def get_blob(self, url: str, *, headers: Mapping[str, str], what: str) -> urllib3.BaseHTTPResponse:
        """A blob GET whose body the caller reads with ``readinto`` and then ``release_conn``s; auth
        and errors as :meth:`send`. Errors while reading the body are urllib3's (retryable)."""
        for attempt in range(2):
            request_headers = dict(headers)
            if self._auth_header:
                request_headers["Authorization"] = self._auth_header
            try:
                response = self.blob_http.request("GET", url, headers=request_headers, preload_content=False)
            except urllib3.exceptions.HTTPError as exc:
                raise RegistryError(f"cannot reach the registry {self.ref.name.host}: {exc}") from None
            if response.status == 401 and attempt == 0 and self._answer_challenge(response.headers):
                response.drain_conn()
                response.release_conn()
                continue
            if response.status >= 400:
                try:
                    body = response.read()
                except urllib3.exceptions.HTTPError:
                    body = b""
                response.release_conn()
                raise self._error(response.status, body, response.headers, what)
            return response
        raise AssertionError("unreachable")

    def _answer_challenge(self, headers: Mapping[str, str]) -> bool:
        scheme, params = parse_challenge(headers.get("www-authenticate", ""))
        with self._lock:
            if scheme == "basic":
                if self.credentials is None or self._auth_header is not None:
                    return False
                self._auth_header = basic_auth(*self.credentials)
                return True
            if scheme == "bearer" and params.get("realm"):
                self._auth_header = f"Bearer {self._token(params)}"
                return True
        return False

    def _token(self, challenge: dict[str, str]) -> str:
        query: list[tuple[str, str]] = []
        if challenge.get("service"):
            query.append(("service", challenge["service"]))
        for scope in challenge.get("scope", "").split():
            query.append(("scope", scope))
        try:
            headers = {"Authorization": basic_auth(*self.credentials)} if self.credentials else None
            response = self.http.get(challenge["realm"], params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the token service {challenge['realm']}: {_reason(exc)}") from None
        if response.status_code in (401, 403):
            who = f"the credentials of {self.credentials[0]!r}" if self.credentials else "an anonymous request"
            raise Unauthorized(f"unauthorized: the token service {challenge['realm']} for {self.ref.name.host} "
                               f"refused {who} ({response.status_code})"
                               f"{_hint(None) if self.credentials is None else ''}")
        if response.status_code >= 400:
            raise RegistryError(f"token service {challenge['realm']} answered {response.status_code}")
        try:
            body: dict[str, Any] = response.json()
            return str(body.get("token") or body["access_token"])
        except (ValueError, KeyError):
            raise RegistryError(f"token service {challenge['realm']} sent no token") from None

    def _error(self, status: int, body: bytes, headers: Mapping[str, str], what: str) -> Exception:
        detail = _registry_message(body)
        host = self.ref.name.host
        if status == 401:
            _, challenge = parse_challenge(headers.get("www-authenticate", ""))
            if self.credentials is not None and challenge.get("error") == "insufficient_scope":
                # a token came, but without the actions asked for: say which, not "wrong password"
                return Unauthorized(f"unauthorized: access to {self.ref.repository} on {host} denied: "
                                    f"{self.credentials[0]!r} was not granted {challenge.get('scope', 'access')}")
            return Unauthorized(f"unauthorized: access to {self.ref.repository} on {host} denied"
                                f"{_hint(self.credentials)}")
        if status == 403:
            return Unauthorized(f"forbidden: {host} does not allow this{': ' + detail if detail else ''}")
        if status == 404:
            return NotFound(f"{what or 'file'}: file does not exist ({self.ref.name.short} is not on {host})")
        return RegistryError(f"{what + ': ' if what else ''}{host} answered {status}"
                             f"{': ' + detail if detail else ''}")


def _body(response: httpx.Response) -> bytes:
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _registry_message(body: bytes) -> str:
    """The first message of the distribution API's ``{"errors": [{"code", "message"}]}`` body."""
    try:
        errors = json.loads(body).get("errors") or []
        return str(errors[0].get("message") or errors[0].get("code") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _hint(credentials: tuple[str, str] | None) -> str:
    if credentials is None:
        return f" (no credentials given: set {AUTH_ENV}=user:password)"
    return " (the credentials were refused)"


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
