"""Admin actions: each one ledger call made through ``manager.acting_as(operator)``, so the entry
or event it writes names the operator in the same transaction as the change.

Only reached when admin actions are enabled, by an authenticated operator whose form carried
the session's CSRF token (``app.py`` checks both before calling here).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .. import LocalCreditManager
from .params import BadRequest, Params
from .views import KEY_WINDOWS

# A form carries a random nonce: a resubmitted grant is one grant (the nonce is its idempotency key).
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


def _grant(m: LocalCreditManager, p: Params) -> str:
    user = p.required("user")
    amount = p.amount("amount", required=True)
    reason = p.text("reason")
    nonce = p.required("nonce")
    p.done(also=("csrf",))
    if not _NONCE.match(nonce):
        raise BadRequest("parameter 'nonce' is malformed")
    if amount is None or amount <= 0:
        raise BadRequest("parameter 'amount' must be more than 0")
    metadata = {"reason": reason} if reason else None
    m.add_credits(user, amount, kind="grant", idempotency_key=f"dashboard:{nonce}", metadata=metadata)
    return user


def _key_action(call: Callable[[LocalCreditManager, str, str], None]) -> Callable[[LocalCreditManager, Params], str]:
    def action(m: LocalCreditManager, p: Params) -> str:
        user, key_id = p.required("user"), p.required("key_id")
        p.done(also=("csrf",))
        call(m, key_id, user)
        return user

    return action


def _key_limit(m: LocalCreditManager, p: Params) -> str:
    user, key_id = p.required("user"), p.required("key_id")
    limit = p.amount("limit")
    window = p.choice("window", KEY_WINDOWS)
    p.done(also=("csrf",))
    m.set_key_limit(key_id, limit, window, user_id=user)
    return user


ACTIONS: dict[str, Callable[[LocalCreditManager, Params], str]] = {
    "grant": _grant,
    "revoke-key": _key_action(lambda m, k, u: m.revoke_api_key(k, user_id=u)),
    "disable-key": _key_action(lambda m, k, u: m.disable_api_key(k, user_id=u)),
    "enable-key": _key_action(lambda m, k, u: m.enable_api_key(k, user_id=u)),
    "key-limit": _key_limit,
}


def run(name: str, manager: LocalCreditManager, operator: str, form: Params) -> str:
    """Runs action ``name`` as ``operator``; returns the account to show next."""
    action = ACTIONS.get(name)
    if action is None:
        raise BadRequest(f"no action {name[:32]!r}", 404)
    return action(manager.acting_as(operator), form)
