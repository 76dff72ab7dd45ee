"""creditgate as a drop-in for a gateway's hand-written `billing/credit_manager.py`.

    pip install .                        # from the repository root
    python examples/python_quickstart.py

In the gateway itself, the one change is the import:

    from creditgate import LocalCreditManager   # was: from billing.credit_manager import ...
    credits = LocalCreditManager()               # DATABASE_URL, MIN_CREDITS_API_KEY from the env
"""

from __future__ import annotations

import os
import tempfile

from creditgate import InsufficientCredits, LocalCreditManager


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # a throw-away ledger for this run
        credits = LocalCreditManager(f"sqlite:///{os.path.join(tmp, 'ledger.db')}", min_credits_api_key=5000)

        # Key creation is gated on payment: a new user gets 402.
        print("eligible before paying:", bool(credits.can_generate_api_key("user-42")))
        try:
            credits.create_api_key("user-42")
        except InsufficientCredits as e:
            print(f"create_api_key -> {e.status_code} {e.code}: {e}")

        # The payment webhook: $5.00 buys 5,000 credits, once per payment id.
        credits.record_payment("user-42", "pay_123", amount_minor=500, currency="USD")
        credits.record_payment("user-42", "pay_123", amount_minor=500, currency="USD")  # redelivered
        key = credits.create_api_key("user-42", name="prod")
        print("balance:", credits.get_balance("user-42"), "| key:", key)  # repr never shows the secret

        # Per API request: verify the key (401/402), call the model, charge.
        who = credits.verify_api_key_credits(key.secret)
        charge = credits.record_usage(key.secret, input_tokens=1200, output_tokens=300, request_id="req-1")
        print(f"{who.user_id} used {charge.tokens} tokens -> charged {charge.charged}, balance {charge.balance}")

        # Or hold the worst case first, for streaming and concurrent requests.
        hold = credits.reserve(key.secret, tokens=4096, request_id="req-2")
        charge = credits.settle(hold.hold_id, input_tokens=50, output_tokens=700)
        print(f"held {hold.amount}, charged {charge.charged}, balance {charge.balance}")

        print("audit ok:", credits.audit().ok)


if __name__ == "__main__":
    main()
