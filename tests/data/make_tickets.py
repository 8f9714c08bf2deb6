"""Writes tests/data/tickets.csv: 400 short customer-support messages in four topics, for the text tests.

    python tests/data/make_tickets.py      # rewrites tickets.csv (fixed seed: the same file every time)

Built to look like a support inbox rather than a toy: the topics are imbalanced (billing 45%,
delivery 30%, technical 17%, account 8%), most messages are routine rewordings of a few common
complaints, and some mention another topic in passing ("I was charged but the app crashes"), so a
word list alone does not decide every one. The label is the topic the message is about.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SEED = 20261202
COUNTS = {"billing": 180, "delivery": 120, "technical": 68, "account": 32}

CORE = {
    "billing": [
        "I was charged twice for my order", "the invoice shows the wrong amount", "I want a refund for the extra charge",
        "my card was billed after I cancelled", "why is there a fee on my statement", "the discount code was not applied to the price",
        "please send me a copy of the invoice", "I paid but the payment shows as pending", "the subscription renewed at a higher price",
        "my bank shows a charge I do not recognise", "can I pay by bank transfer instead of card", "the refund has not reached my account",
    ],
    "delivery": [
        "my parcel has not arrived yet", "the tracking number does not work", "the courier left the package at the wrong address",
        "the box arrived damaged", "delivery is a week late", "can I change the delivery address",
        "the package was marked delivered but I never got it", "only half of my order arrived", "when will my order be shipped",
    ],
    "technical": [
        "the app crashes when I open it", "I get an error when I upload a photo", "the page freezes at checkout",
        "notifications stopped working after the update", "the website does not load on my phone", "sync fails with a timeout error",
    ],
    "account": [
        "I cannot reset my password", "please delete my account and my data", "how do I change the email on my profile",
        "my account was locked after too many attempts", "someone else logged into my account",
    ],
}
ASIDE = {  # a passing mention of another topic: the message is still about its own
    "billing": "and the app also crashed once", "delivery": "I also paid for express shipping",
    "technical": "it happened while I was paying", "account": "it is the account I pay the subscription with",
}
OPENERS = ["Hello,", "Hi team,", "Good morning,", "", "Hey,", "Dear support,", "Urgent:", ""]
CLOSERS = ["Thanks.", "Please help.", "What should I do?", "", "Can you check?", "This is frustrating.", ""]


def tickets(rng: np.random.Generator) -> list[tuple[str, str]]:
    rows = []
    for topic, count in COUNTS.items():
        # a few complaints are common (routine), the rest rare: a Zipf-like weighting of the phrases
        weights = 1.0 / np.arange(1, len(CORE[topic]) + 1) ** 1.2
        for _ in range(count):
            core = CORE[topic][rng.choice(len(CORE[topic]), p=weights / weights.sum())]
            if rng.random() < 0.2:
                core = f"{core}, {ASIDE[rng.choice([t for t in ASIDE if t != topic])]}"
            words = [OPENERS[rng.integers(len(OPENERS))], core[0].upper() + core[1:] + ".", CLOSERS[rng.integers(len(CLOSERS))]]
            rows.append((" ".join(w for w in words if w), topic))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def main() -> None:
    path = Path(__file__).with_name("tickets.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["message", "topic"])
        writer.writerows(tickets(np.random.default_rng(SEED)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
