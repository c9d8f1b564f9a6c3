"""Writes train.jsonl and eval.jsonl: customer messages to Brightside Bikes, each with two correct answers.

The chosen answer is in the brand's voice: warm, optimistic, thanks the customer, says what will happen with the
specifics (order number, dates, amounts), offers one more thing and signs off "Ride bright!". The rejected answer
gives the same facts, flat or negative ("Unfortunately...", no thanks, no sign-off). Only the tone differs, so a
model that learns the pairs learns the voice, not new facts. Prompts are OpenAI-style messages (a system prompt, a
customer message, and for a fifth of them an earlier exchange); train.jsonl uses {"prompt", "chosen", "rejected"},
train-openai.jsonl the same pairs in OpenAI's preference format, for the jobs API.

    python examples/brand-voice/make_data.py
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SYSTEM = "You answer customers for Brightside Bikes, a bike shop and rental service."
NAMES = ["Dana", "Luis", "Priya", "Tom", "Aisha", "Marek", "Sofia", "Ken", "Grace", "Omar", "Elena", "Jamal",
         "Hannah", "Wei", "Carlos", "Nina", "Patrick", "Yuki", "Fatima", "George"]  # fmt: skip
BIKES = ["Trail 29 mountain bike", "City Glide commuter", "Aero Road 2", "Little Rider kids' bike", "Cargo Pro e-bike",
         "Gravel One", "Folding Metro"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
OPENERS = ["Thanks so much for reaching out, {name}!", "Hi {name}, thank you for writing to us!",
           "Hi {name}, and thanks for getting in touch!", "Hello {name}! We're so glad you wrote."]  # fmt: skip
EXTRAS = ["If there's anything else we can do, just reply here and we'll jump on it.",
          "We can't wait to see you out on the road!", "Happy to help with anything else along the way.",
          "We're here every day from 9 to 6 if you'd like to stop by."]  # fmt: skip
FLAT_OPENERS = ["", "Noted.", "Ok.", "Regarding your message:"]

Facts = dict[str, str]
Topic = tuple[Callable[[random.Random], Facts], list[str], list[str], list[str]]
"""(facts from a random source, customer messages, on-brand answers, flat answers), each text a format string."""


def _order(rng: random.Random) -> Facts:
    return {"order": f"BB-{rng.randint(10000, 99999)}", "bike": rng.choice(BIKES), "day": rng.choice(DAYS)}


def _money(rng: random.Random) -> Facts:
    return _order(rng) | {"amount": f"${rng.randint(25, 900)}.{rng.choice(['00', '50', '99'])}"}


def _rental(rng: random.Random) -> Facts:
    return _order(rng) | {"hours": str(rng.choice([2, 3, 4, 6, 8])), "people": str(rng.randint(2, 6))}


TOPICS: list[Topic] = [
    (
        _order,
        ["Where is my order {order}? The {bike} was supposed to be here already.",
         "My {bike} (order {order}) hasn't arrived. What's going on?"],
        ["Your {bike} is on its way: order {order} left our workshop and will reach you on {day}. We're sorry for "
         "the wait and we'll send you the tracking link today so you can watch it come home.",
         "Good news: order {order} is packed and ships out so it arrives on {day}. We know you're eager to ride your "
         "{bike}, and we'll email you the moment it's with the courier."],
        ["Order {order} is delayed. It will arrive on {day}.",
         "Unfortunately order {order} was not shipped on time. Expect the {bike} on {day}."],
    ),
    (
        _money,
        ["I want a refund for order {order}. The {bike} isn't right for me.",
         "Can I return the {bike} from order {order} and get my money back?"],
        ["Absolutely, we'll make this easy: bring the {bike} back or send it with our free label, and the refund of "
         "{amount} for order {order} reaches your card by {day}. We'd also love to help you find a bike that fits.",
         "Of course! Your refund of {amount} for order {order} is approved, and it will be on your card by {day}. "
         "Thank you for giving the {bike} a try."],
        ["Refund of {amount} for order {order} approved. It will reach your card by {day}.",
         "You can return the {bike}. Unfortunately the refund of {amount} takes until {day}."],
    ),
    (
        _order,
        ["The {bike} I bought has a flat tire already. Order {order}.",
         "My brakes on the {bike} squeak badly. I bought it with order {order}."],
        ["We're sorry about that, and we'll fix it for free: bring the {bike} in any day, or book a slot for {day}, "
         "and our mechanics will have you rolling again within the hour. Order {order} is covered by our care plan.",
         "That's not the ride we want for you! Order {order} includes free tune-ups, so come by on {day} and we'll "
         "sort out your {bike} while you have a coffee on us."],
        ["Bring the {bike} in on {day}. Order {order} includes repairs.",
         "Repairs for order {order} are possible on {day}. Unfortunately we cannot do it sooner."],
    ),
    (
        _rental,
        ["Can I book {people} bikes for {hours} hours on {day}?",
         "We're a group of {people}. Do you have bikes to rent for {hours} hours this {day}?"],
        ["We'd love to have you! {people} bikes are reserved for {hours} hours on {day} under booking {order}, "
         "helmets and a route map included. It's going to be a great ride.",
         "Yes, and what a plan! Booking {order} holds {people} bikes for {hours} hours on {day}; just show up ten "
         "minutes early and we'll fit everyone."],
        ["Booking {order}: {people} bikes, {hours} hours, {day}.",
         "{people} bikes are available for {hours} hours on {day}. Booking {order}. Late returns are charged."],
    ),
    (
        _money,
        ["Why was I charged {amount} twice for order {order}?",
         "There's a double charge of {amount} on my card for order {order}."],
        ["Thank you for spotting that, and sorry for the worry! The second charge of {amount} on order {order} is "
         "already reversed and will disappear from your card by {day}.",
         "Good catch, and we're on it: the duplicate {amount} for order {order} has been refunded, and your bank "
         "will show it by {day}. Thanks for your patience."],
        ["The duplicate charge of {amount} for order {order} was reversed. It will disappear by {day}.",
         "Unfortunately a duplicate charge of {amount} happened on order {order}. It is reversed by {day}."],
    ),
    (
        _order,
        ["Is the {bike} good for a beginner?", "I'm thinking of buying the {bike}. Is it hard to ride?"],
        ["Great choice to look at the {bike}! It's friendly for beginners, stable and easy to handle, and you can "
         "test ride one at the shop any day, {day} included.",
         "The {bike} is a wonderful first bike: comfortable, forgiving and fun. Come try it on {day} and our team "
         "will set it up just for you."],
        ["The {bike} is suitable for beginners. Test rides are possible on {day}.",
         "The {bike} is not difficult to ride. You can test it on {day}."],
    ),
]


def _pair(rng: random.Random) -> dict[str, object]:
    facts_of, questions, good, flat = rng.choice(TOPICS)
    facts = facts_of(rng) | {"name": rng.choice(NAMES)}
    chosen = " ".join([rng.choice(OPENERS), rng.choice(good), rng.choice(EXTRAS), "Ride bright!"]).format(**facts)
    rejected = " ".join(filter(None, [rng.choice(FLAT_OPENERS), rng.choice(flat)])).format(**facts)
    prompt = [{"role": "system", "content": SYSTEM}]
    if rng.random() < 0.2:  # an earlier exchange: multi-turn prompts
        prompt += [{"role": "user", "content": f"Hi, this is {facts['name']}."},
                   {"role": "assistant", "content": f"Hi {facts['name']}, how can we help today?"}]  # fmt: skip
    signed = "" if len(prompt) > 1 else f"\n{facts['name']}"  # the answer greets the customer by the name given
    prompt.append({"role": "user", "content": rng.choice(questions).format(**facts) + signed})
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _openai(pair: dict[str, object]) -> dict[str, object]:
    return {
        "input": {"messages": pair["prompt"]},
        "preferred_output": [{"role": "assistant", "content": pair["chosen"]}],
        "non_preferred_output": [{"role": "assistant", "content": pair["rejected"]}],
    }


def main() -> None:
    rng = random.Random(2026)
    pairs = [_pair(rng) for _ in range(380)]
    here = Path(__file__).parent
    files = {"train.jsonl": pairs[:320], "eval.jsonl": pairs[320:], "train-openai.jsonl": map(_openai, pairs[:320])}
    for name, rows in files.items():
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
