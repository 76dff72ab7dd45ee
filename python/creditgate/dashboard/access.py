"""Who may use the dashboard: operator tokens, signed session cookies and CSRF tokens.

Off unless configured: with no token the app refuses to start. Tokens map to
operator names (the name goes into the ledger with every admin action). A
presented token is compared with every configured one in constant time (each
through its SHA-256, so lengths leak nothing and no early exit tells which
came close). A browser logs in once with its token and then carries a session
cookie signed with a key derived from that operator's token: every worker
process verifies it without shared state, and changing a token ends its
sessions. A form's CSRF token is derived from the session the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DashboardConfig", "DashboardConfigError", "Session", "new_token"]

TOKEN_ENV = "CREDITGATE_DASHBOARD_TOKEN"
ADMIN_ENV = "CREDITGATE_DASHBOARD_ADMIN"
DEFAULT_OPERATOR = "operator"
TOKEN_MIN_CHARS = 24
TOKEN_MAX_CHARS = 256
OPERATORS_MAX = 64
SESSION_SECONDS_DEFAULT = 12 * 3600
SESSION_SECONDS_MAX = 7 * 86400
COOKIE_NAME = "creditgate_dashboard"
# URL-safe base64 (what `new_token` makes): no ':' or ',' inside, so the
# variable's `name:token,name:token` form is unambiguous.
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_MIN_CHARS},{TOKEN_MAX_CHARS}}}\Z")
# The name is stored in a cookie and in ledger metadata: a small alphabet.
_OPERATOR = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}\Z")
# A session's expiry: ASCII digits only (str.isdigit() also takes "²", which int() refuses).
_EXPIRY = re.compile(r"[0-9]{1,12}\Z")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class DashboardConfigError(ValueError):
    """The dashboard's access settings are missing or malformed (it does not start)."""


def new_token() -> str:
    """A fresh operator token: 43 URL-safe characters (256 random bits)."""
    return secrets.token_urlsafe(32)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Session:
    """An authenticated operator; ``csrf`` is None for bearer-token requests (not CSRF-able)."""

    operator: str
    csrf: str | None = None


@dataclass(frozen=True)
class DashboardConfig:
    """Operator name → token, and whether admin actions are enabled.

    ``DashboardConfig.from_env()`` reads ``CREDITGATE_DASHBOARD_TOKEN`` (one
    token for the operator named ``operator``, or ``name:token,name:token``)
    and ``CREDITGATE_DASHBOARD_ADMIN`` (``1``/``true``: admin actions on).
    """

    tokens: Mapping[str, str]
    admin: bool = False
    session_seconds: int = SESSION_SECONDS_DEFAULT
    _digests: tuple[tuple[str, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise DashboardConfigError(f"no operator token: set {TOKEN_ENV} (the dashboard is off without one)")
        if len(self.tokens) > OPERATORS_MAX:
            raise DashboardConfigError(f"at most {OPERATORS_MAX} operators, got {len(self.tokens)}")
        for name, token in self.tokens.items():
            if not _OPERATOR.match(name):
                # Not quoted: a `token:name` written the wrong way round would print the token.
                raise DashboardConfigError("an operator name (before ':') is 1 to 64 of A-Z a-z 0-9 _ . @ -")
            if not _TOKEN.match(token):
                raise DashboardConfigError(
                    f"operator {name!r}: a token is {TOKEN_MIN_CHARS} to {TOKEN_MAX_CHARS} URL-safe characters "
                    "(A-Z a-z 0-9 _ -); `creditgate dashboard --new-token` prints one"
                )
        if len(set(self.tokens.values())) != len(self.tokens):
            raise DashboardConfigError("two operators share a token: each needs its own")
        if not 60 <= self.session_seconds <= SESSION_SECONDS_MAX:
            raise DashboardConfigError(f"session_seconds must be in 60..={SESSION_SECONDS_MAX}")
        object.__setattr__(self, "_digests", tuple((n, _digest(t)) for n, t in sorted(self.tokens.items())))

    def __repr__(self) -> str:  # never the tokens
        return f"DashboardConfig(operators={sorted(self.tokens)!r}, admin={self.admin!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, admin: bool | None = None) -> DashboardConfig:
        env = os.environ if environ is None else environ
        raw = env.get(TOKEN_ENV, "").strip()
        tokens: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, token = part.rpartition(":")
            name = name if sep else DEFAULT_OPERATOR
            if name in tokens:
                raise DashboardConfigError(f"{TOKEN_ENV}: operator {name[:64]!r} is given twice")
            tokens[name] = token
        if admin is None:
            flag = env.get(ADMIN_ENV, "").strip().lower()
            if flag not in _TRUE + _FALSE:
                raise DashboardConfigError(f"{ADMIN_ENV} must be 1/true or 0/false, got {flag[:16]!r}")
            admin = flag in _TRUE
        return cls(tokens=tokens, admin=admin)

    def operator_for(self, token: str) -> str | None:
        """The operator whose token this is, compared in constant time with every token."""
        presented = _digest(token)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        return found

    # ----- sessions: "name~expiry~signature", signed per operator -------------------

    def _key(self, operator: str) -> bytes | None:
        token = self.tokens.get(operator)
        if token is None:
            return None
        return hmac.new(_digest(token), b"creditgate-dashboard-session-v1", hashlib.sha256).digest()

    def issue_cookie(self, operator: str, now: float | None = None) -> str:
        key = self._key(operator)
        if key is None:
            raise KeyError(operator)
        expiry = int(now if now is not None else time.time()) + self.session_seconds
        body = f"{operator}~{expiry}"
        return f"{body}~{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"

    def session_from_cookie(self, cookie: str, now: float | None = None) -> Session | None:
        parts = cookie.split("~")
        if len(parts) != 3 or len(cookie) > 256 or not _EXPIRY.match(parts[1]):
            return None
        operator, expiry, signature = parts
        key = self._key(operator)
        if key is None or int(expiry) < (now if now is not None else time.time()):
            return None
        body = f"{operator}~{expiry}"
        expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest().encode()
        # Bytes: a cookie is read as Latin-1, and compare_digest refuses non-ASCII str (a 401, not a 500).
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            return None
        csrf = hmac.new(key, f"csrf~{body}".encode(), hashlib.sha256).hexdigest()
        return Session(operator=operator, csrf=csrf)
