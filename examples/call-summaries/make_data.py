"""Writes train.jsonl and eval.jsonl: customer-service call transcripts with the summaries an expert agent writes.

The expert format is the team's CRM note: who, the issue with its specifics, what was done, the outcome, the
follow-up with a date, and the customer's mood. Generic summaries miss the account number, the amounts, the
dates and the promised follow-up; these are what fine-tuning should teach.

    python examples/call-summaries/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = "You write the CRM note for a customer call, in the team's format."
FIRST = [
    "Dana",
    "Luis",
    "Priya",
    "Tom",
    "Aisha",
    "Marek",
    "Sofia",
    "Ken",
    "Grace",
    "Omar",
    "Elena",
    "Jamal",
    "Hannah",
    "Wei",
    "Carlos",
    "Nina",
    "Patrick",
    "Yuki",
    "Fatima",
    "George",
]
LAST = [
    "Ortiz",
    "Nguyen",
    "Shah",
    "Keller",
    "Bello",
    "Novak",
    "Rossi",
    "Tanaka",
    "Murphy",
    "Haddad",
    "Petrova",
    "Brooks",
    "Schmidt",
    "Chen",
    "Alvarez",
    "Larsen",
    "O'Brien",
    "Sato",
    "Rahman",
    "Walsh",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MONTHS = ["March", "April", "May", "June", "September", "October"]
MOODS = [
    ("angry", "calm"),
    ("frustrated", "satisfied"),
    ("polite", "satisfied"),
    ("worried", "reassured"),
    ("impatient", "neutral"),
]

# Each scenario: (product, the customer's problem, the agent's finding, the action, the outcome, the follow-up).
SCENARIOS = [
    (
        "home broadband",
        "the internet drops every evening around {hour} pm",
        "the line test shows noise on the copper line from the street cabinet",
        "booked an engineer visit",
        "engineer visit on {day} between 8 am and 12 pm",
        "agent to check the line again 48 hours after the visit",
    ),
    (
        "home broadband",
        "speeds of {low} Mbps on a {high} Mbps plan",
        "the router is an old model that caps Wi-Fi speed",
        "sent a replacement router free of charge",
        "router arriving by {day}",
        "customer to run a speed test after setup and call back if under {high_half} Mbps",
    ),
    (
        "mobile plan",
        "a roaming charge of ${amount} after a trip to {country}",
        "the roaming pass was bought one day after arrival, so the first day was billed per MB",
        "refunded the first day's roaming charges as a one-off goodwill credit",
        "credit of ${amount} on the next bill",
        "none needed; customer told how to buy the pass before travelling",
    ),
    (
        "mobile plan",
        "no signal at home since {day}",
        "a mast near the customer's postcode is under maintenance",
        "enabled Wi-Fi calling on the account and gave a {credit_days}-day service credit",
        "maintenance due to finish on {day2}",
        "agent to text the customer when the mast is back",
    ),
    (
        "electricity account",
        "a bill of ${amount}, about three times the usual",
        "the bill used an estimated meter reading; the real reading is much lower",
        "took a meter reading over the phone and reissued the bill",
        "corrected bill of ${small} replaces the estimate",
        "customer to submit readings monthly in the app to avoid estimates",
    ),
    (
        "electricity account",
        "a direct debit taken twice in {month}",
        "a system error created a duplicate payment request",
        "raised a refund for the duplicate payment",
        "refund of ${amount} within 5 working days",
        "agent to confirm the refund on {day}",
    ),
    (
        "credit card",
        "a payment of ${amount} to an online shop the customer does not recognise",
        "the card details were used on a site the customer never visited",
        "blocked the card, opened a fraud case and ordered a new card",
        "temporary credit of ${amount}; new card in 3 to 5 days",
        "fraud team to contact the customer within 10 days with the case outcome",
    ),
    (
        "credit card",
        "a late payment fee of ${fee} although the payment was made on time",
        "the payment arrived one day late because it was sent on a bank holiday",
        "waived the fee as a one-off",
        "fee of ${fee} removed",
        "customer advised to set up autopay; agreed to do it in the app",
    ),
    (
        "washing machine delivery",
        "a delivery promised for {day} that never arrived",
        "the courier marked the order as failed delivery because the address was missing the flat number",
        "corrected the address and rebooked delivery",
        "new delivery on {day2}, 7 am to 1 pm",
        "delivery fee of ${fee} refunded; customer gets a text on the morning of delivery",
    ),
    (
        "washing machine",
        "error code {code} and water left in the drum",
        "the drain filter is blocked, a common cause of this error",
        "talked the customer through cleaning the filter",
        "machine drained and ran a test cycle without the error",
        "if the error returns, technician visit covered under the {years}-year warranty",
    ),
    (
        "software subscription",
        "charged ${amount} for an annual renewal the customer meant to cancel",
        "the renewal reminder went to an old email address",
        "cancelled the subscription and refunded the renewal, within the 30-day refund window",
        "full refund of ${amount} in 3 to 5 working days",
        "agent updated the email address on the account",
    ),
    (
        "software subscription",
        "cannot log in after a password reset",
        "the account is locked after five failed attempts",
        "unlocked the account and turned on two-factor sign-in with the customer",
        "customer logged in during the call",
        "none needed",
    ),
    (
        "car insurance",
        "the renewal price rose from ${small} to ${amount}",
        "the no-claims discount was not applied at renewal",
        "re-applied the {ncd}-year no-claims discount",
        "renewal price corrected to ${small_plus}",
        "new policy documents emailed today",
    ),
    (
        "car insurance",
        "wants to add a second driver, {first2}, for a trip in {month}",
        "the second driver has a valid licence held for {years} years",
        "added {first2} as a named driver from {day} for 2 weeks",
        "extra premium of ${fee} charged to the card on file",
        "documents for the temporary driver sent by email",
    ),
]


def fill(rng: random.Random, text: str, values: dict[str, str]) -> str:
    return text.format(**values)


def values_for(rng: random.Random) -> dict[str, str]:
    amount = rng.choice([89, 124, 156, 212, 248, 317, 389, 455, 612])
    high = rng.choice([100, 200, 500])
    return {
        "hour": str(rng.randint(6, 10)),
        "low": str(rng.randint(3, 15)),
        "high": str(high),
        "high_half": str(high // 2),
        "amount": f"{amount}.{rng.randint(0, 99):02d}",
        "small": f"{rng.randint(40, 80)}.{rng.randint(0, 99):02d}",
        "small_plus": f"{rng.randint(81, 120)}.{rng.randint(0, 99):02d}",
        "fee": str(rng.choice([12, 15, 25, 35])),
        "country": rng.choice(["Spain", "Canada", "Japan", "Mexico", "Italy", "Turkey"]),
        "day": rng.choice(DAYS),
        "day2": rng.choice(DAYS),
        "month": rng.choice(MONTHS),
        "credit_days": str(rng.choice([7, 10, 14])),
        "code": rng.choice(["E21", "F05", "OE", "E18"]),
        "years": str(rng.choice([2, 3, 5])),
        "ncd": str(rng.choice([3, 4, 5, 6])),
        "first2": rng.choice(FIRST),
    }


def transcript(
    rng: random.Random, name: str, account: str, scenario: tuple[str, ...], v: dict[str, str], mood: tuple[str, str]
) -> str:
    product, problem, finding, action, outcome, follow = (fill(rng, s, v) for s in scenario)
    opener = {
        "angry": "This is the third time I'm calling about this and I'm fed up.",
        "frustrated": "I've had enough of this, honestly.",
        "polite": "Hi, thanks for picking up.",
        "worried": "I'm a bit worried, I don't know what's going on.",
        "impatient": "I haven't got long, can we sort this quickly?",
    }[mood[0]]
    lines = [
        f"Agent: Thanks for calling, this is {rng.choice(['Sam', 'Alex', 'Jordan', 'Chris'])}. Who am I speaking with?",
        f"Customer: {name}. {opener}",
        "Agent: I'm sorry to hear that. Can you confirm your account number?",
        f"Customer: It's {account}.",
        f"Agent: Thank you. What's happening with your {product}?",
        f"Customer: Basically, {problem}.",
        rng.choice(
            [
                "Agent: Let me have a look at that for you.",
                "Agent: Okay, give me a moment to check.",
                "Agent: Right, I'm pulling up the details now.",
            ]
        ),
        f"Agent: I can see that {finding}.",
        rng.choice(
            [
                "Customer: So what are you going to do about it?",
                "Customer: Okay, that makes sense.",
                "Customer: Nobody told me that before.",
            ]
        ),
        f"Agent: I've {action}. So: {outcome}.",
        f"Agent: Next step: {follow}.",
        rng.choice(
            [
                "Customer: Fine, thank you.",
                "Customer: Great, that's all I needed.",
                "Customer: Okay. Thanks for sorting it.",
                "Customer: Alright, I'll wait for that then.",
            ]
        ),
        "Agent: Is there anything else I can help with today?",
        "Customer: No, that's it.",
    ]
    return "\n".join(lines)


def summary(name: str, account: str, scenario: tuple[str, ...], v: dict[str, str], mood: tuple[str, str]) -> str:
    product, problem, finding, action, outcome, follow = (s.format(**v) for s in scenario)
    return (
        f"Customer: {name}, account {account} ({product}).\n"
        f"Issue: {problem[0].upper() + problem[1:]}.\n"
        f"Cause: {finding[0].upper() + finding[1:]}.\n"
        f"Action: {action[0].upper() + action[1:]}.\n"
        f"Outcome: {outcome[0].upper() + outcome[1:]}.\n"
        f"Follow-up: {follow[0].upper() + follow[1:]}.\n"
        f"Mood: {mood[0]} at the start, {mood[1]} at the end."
    )


def example(rng: random.Random, index: int) -> dict:
    scenario = SCENARIOS[index % len(SCENARIOS)]
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    account = f"{rng.randint(1000, 9999)}-{rng.randint(100, 999)}"
    v, mood = values_for(rng), rng.choice(MOODS)
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Summarise this call.\n\n" + transcript(rng, name, account, scenario, v, mood)},
            {"role": "assistant", "content": summary(name, account, scenario, v, mood)},
        ]
    }


def main() -> None:
    rng = random.Random(20261123)
    rows = [example(rng, i) for i in range(200)]
    rng.shuffle(rows)
    here = Path(__file__).parent
    for name, part in (("train.jsonl", rows[:160]), ("eval.jsonl", rows[160:])):
        (here / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")


if __name__ == "__main__":
    main()
