"""An organisation wallet: two members, a project budget and a monthly allowance.

    pip install .                        # from the repository root
    python examples/organisation.py

docs/organisations.md explains every rule used here.
"""

from __future__ import annotations

import os
import tempfile

from creditgate import InsufficientCredits, LocalCreditManager


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # a throw-away ledger for this run
        m = LocalCreditManager(f"sqlite:///{os.path.join(tmp, 'ledger.db')}")

        # The organisation pays; its members' keys spend from its balance.
        m.record_payment("acme", "pi_1", 1000)  # $10 = 10,000 credits
        m.add_member("acme", "ann")
        m.add_member("acme", "bob")
        ann = m.create_api_key("ann", "laptop")  # acme's first key: 5,000 available on acme
        bob = m.create_api_key("bob", "batch")  # later keys: 1 credit available on acme

        # Bob's key belongs to a project with 100 credits a month.
        m.create_project("acme", "research")
        m.set_key_project(bob.key_id, "research")
        m.set_budget("acme", project="research", limit=100, window="monthly", low_threshold=20)

        # Ann gets 200 credits each month, reserved for her, spent before acme's own credits.
        allowance = m.set_allowance("acme", 200, "monthly", member="ann")
        a = allowance
        print(f"allowance {a.allowance_id}: {a.amount} per {a.period} period, next refill {a.next_refill_at}")

        m.record_usage(bob.secret, input_tokens=90_000, request_id="bob-1")  # 90 credits
        m.record_usage(ann.secret, input_tokens=30_000, output_tokens=15_000, request_id="ann-1")  # 45 credits

        # The project budget binds before acme's balance does: 402 naming it.
        try:
            m.verify_api_key_credits(bob.secret, 20)
        except InsufficientCredits as e:
            print(f"bob: {e.status_code} limit_source={e.limit_source} available={e.available} required={e.required}")

        v = m.verify_api_key_credits(ann.secret, 10)
        print(f"ann: acme has {v.available} available, member budget {v.member_remaining}")

        print("members of acme:")
        for member in m.members("acme"):
            print(f"  {member.user_id} joined {member.joined_at:%Y-%m-%d}")
        for project in m.projects("acme"):
            budget = project.budget
            if budget is not None:
                print(f"project {project.name}: {project.keys} keys, spent {budget.spent} of {budget.limit}")
                print(f"  remaining {budget.remaining}, resets {budget.resets_at}")
        print("usage by member:")
        for usage in sorted(m.member_usage("acme"), key=lambda u: u.member_id):
            print(f"  {usage.member_id}: {usage.requests} requests, {usage.tokens} tokens, {usage.credits} credits")

        for grant in m.account("acme").grants:
            print(f"grant {grant.grant_id}: {grant.category} {grant.remaining}/{grant.amount} for {grant.member_id}")

        report = m.report()
        print(f"allowances issued {report.allowance_issued}, used {report.allowance_used}")
        for event in m.events(after=0, limit=100):
            if event.kind.startswith(("member.", "budget.", "allowance.")):
                print(f"event {event.kind} {event.data}")
        print("audit ok:", m.audit().ok)


if __name__ == "__main__":
    main()
