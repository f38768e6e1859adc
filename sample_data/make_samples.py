"""Regenerate the sample datasets shipped with tunewiz.

Run from the repository root (or anywhere):

    python3 sample_data/make_samples.py

It rewrites, next to this script:

* ``support_tickets.jsonl`` - 360 chat-format rows that classify a customer
  support ticket into category / priority / sentiment.
* ``order_extraction_alpaca.jsonl`` - 240 Alpaca-format rows that extract
  product, quantity and unit price from a short order message.

Output is deterministic (fixed seed, standard library only), so running it
twice gives byte-identical files.  The label counts are printed at the end
so they can be pasted into ``README.md``.

Each ticket is assembled from independently chosen phrase pools: one sentence
that says what the problem is about (-> category), one urgency cue
(-> priority) and one tone cue (-> sentiment), plus optional greeting,
sign-off, lowercase and typo noise that never touches the labels.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

SEED = 1234
OUT_DIR = Path(__file__).resolve().parent
TICKETS_FILE = OUT_DIR / "support_tickets.jsonl"
ORDERS_FILE = OUT_DIR / "order_extraction_alpaca.jsonl"
N_TICKETS = 360
N_ORDERS = 240

# --------------------------------------------------------------------------
# Support tickets
# --------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "Classify the support ticket. Reply with only a JSON object with the keys category, priority and sentiment."
)

CATEGORIES = ["billing", "technical", "account", "shipping", "feature_request"]
PRIORITIES = ["low", "medium", "high", "urgent"]
SENTIMENTS = ["positive", "neutral", "negative"]

# What the ticket is about, one template per line.  Each sentence is neutral
# in tone and carries no urgency, so category, priority and sentiment stay
# independent.  {slots} are filled from SLOTS / fill_slots().
BILLING = """
I was charged twice for order {order}, both {amount} charges are on my {card} statement.
My invoice for {month} says {amount}, but the {plan} is supposed to cost less than that.
I cancelled my subscription on {date} but was still billed {amount} this month.
The promo code {promo} was not applied at checkout, so I paid the full {amount}.
I returned order {order} on {date} and the {amount} refund has not reached my account.
My {card} is declined every time I try to renew the {plan}, it works everywhere else.
Please send a corrected invoice for order {order} with our VAT number on it.
I upgraded to the {plan} mid-month and the prorated charge of {amount} looks wrong.
There is a charge of {amount} from your company on {date} that I do not recognize.
how do i switch my subscription from monthly to annual billing without paying twice
The receipt for order {order} shows {amount} in sales tax, which seems too high.
We are billed for {seats} seats on the {plan} but only have {few} active users.
Checkout charged me in euros instead of dollars for order {order}.
My free trial ended early and I was charged {amount} on {date} without a reminder.
I need to replace the {card} on file before the next renewal of our {plan}.
Our finance team cannot download the {month} invoice as a PDF from the billing page.
"""
TECHNICAL = """
The app crashes as soon as I open the reports tab on my {device}.
Your API returns {error} on every POST to /v2/orders since {date}.
The dashboard is stuck on the loading spinner in {browser}.
The CSV export of the {report} report produces an empty file with only the header row.
Our webhooks stopped firing after the update on {date}, nothing reaches our endpoint.
Changes I make on my {device} no longer sync to the web dashboard.
Push notifications stopped arriving on my {device} even though they are enabled.
The {integration} integration keeps disconnecting and shows {error} when I reconnect.
Image uploads in the product editor fail with {error}.
Dashboard search returns nothing for orders that definitely exist, like {order}.
The API answers 429 after only {n} requests per minute, far below our documented limit.
The PDF export cuts off the last column of every table.
Since the last update the app on my {device} takes about {n} seconds to load a page.
Charts on the analytics page show no data since {date} although orders keep coming in.
The sync with {integration} is creating duplicate contacts every night.
The date picker on the scheduling screen ignores clicks in {browser}.
"""
ACCOUNT = """
I cannot log in because the password reset email never arrives at {email}.
My account got locked after too many login attempts and the unlock link has expired.
I lost my phone and no longer get two-factor codes, so I cannot get into my account.
Please change the login email on my account from {email} to {email2}.
I would like my account and all of its data deleted.
I need to transfer ownership of our workspace to {name}, our new admin.
I got a password change notice for my account that I did not request myself.
My profile still shows the old username even though I changed it on {date}.
The team invite I sent to {email} expired, can you resend it?
I have two accounts, {email} and {email2}, and want them merged into one.
Please remove {name} from our organisation account, they left the company on {date}.
The option to turn off two-factor authentication is missing from my security settings.
I signed up with Google login and now want to sign in with a normal password instead.
My account was suspended on {date} and I would like to know why.
How do I change my role in our workspace from viewer to admin?
The verification code for my new account never shows up in my inbox at {email}.
"""
SHIPPING = """
The tracking for order {order} has said label created since {date}.
{carrier} marked order {order} as delivered but nothing arrived at my door.
My parcel arrived with the box crushed and the {item} inside is broken.
I ordered a {item} in order {order} but received a completely different product.
I moved last week, can you change the shipping address on order {order} before it ships?
The tracking number for order {order} does not work on the {carrier} website.
Order {order} was supposed to arrive by {date} and it is still not here.
Only {few} of the {seats} items from order {order} were in the parcel.
Checkout will not accept my address in {country}, do you ship there?
My parcel for order {order} has been stuck in customs for {few} days.
The courier left my parcel for order {order} with a neighbour I do not know.
I paid for express delivery on order {order} but it went out by standard shipping.
The return label you emailed for order {order} is rejected by {carrier}.
Could orders {order} and {order2} be combined into one shipment?
{carrier} claims it tried to deliver order {order}, but I was home all day.
Order {order} shipped to my old address in {city} even though I updated it.
"""
FEATURE_REQUEST = """
It would help a lot if the dashboard had a dark mode.
Could you add an option to export reports to {export_fmt}?
Feature request: bulk editing of product prices instead of one at a time.
Is there any plan to support {integration} as a native integration?
Please add a way to schedule reports to be emailed every Monday.
I would like to request an API endpoint for listing refunds.
Would you consider adding custom fields to customer profiles?
Any chance of a keyboard shortcut for switching between workspaces?
Suggestion: let admins set different permissions per project.
Could the mobile app get an offline mode for viewing orders?
We would like to see multi-currency support added to invoices.
Can you add {language} as a language option in the app?
Feature idea: a calendar view that shows upcoming renewals.
Is it possible to add a webhook that fires when an order is cancelled?
I would like the ability to duplicate an existing project template.
Please add an undo button for deleted notes.
"""


def template_lines(block: str) -> list[str]:
    return [line for line in block.strip().splitlines() if line]


CORES = {
    "billing": template_lines(BILLING),
    "technical": template_lines(TECHNICAL),
    "account": template_lines(ACCOUNT),
    "shipping": template_lines(SHIPPING),
    "feature_request": template_lines(FEATURE_REQUEST),
}

# Urgency cues.  "" means no cue at all, which always reads as medium.
PRIORITY_CUES = {
    "urgent": [
        "This is urgent, please fix it ASAP.",
        "URGENT: we are losing sales every minute this continues.",
        "Our whole team is blocked right now, we need this fixed immediately.",
        "Please treat this as an emergency.",
        "It is critical, customers are waiting on us right now.",
        "I need this resolved within the hour.",
        "Please escalate immediately, this is costing us money.",
        "need this fixed asap!!",
        "This cannot wait, please handle it right away.",
    ],
    "high": [
        "Please look at this today.",
        "I need this sorted out by end of day.",
        "This is blocking my work, so a fix today would really matter.",
        "Can someone get back to me today?",
        "It is important, please prioritize it.",
        "I need an answer before tomorrow's meeting.",
        "High priority for us, please respond today.",
        "We need this handled before close of business today.",
    ],
    "medium": [
        "",
        "Could you look into this sometime this week?",
        "A reply in the next few days is fine.",
        "Please get back to me when you can this week.",
        "Not an emergency, but I would like it fixed soon.",
        "An update within a couple of days works for me.",
        "Sometime this week would be good.",
    ],
    "low": [
        "No rush, whenever you get a chance.",
        "Just curious, not urgent at all.",
        "Low priority, reply whenever.",
        "No hurry on this one.",
        "Whenever you have a spare moment is fine.",
        "It is not time-sensitive at all.",
        "Just flagging it for later, no rush.",
        "no rush.",
    ],
}

# Extra urgency cues that only make sense for one category.
PRIORITY_EXTRA = {
    ("technical", "urgent"): [
        "Production is down for all of our users.",
        "Our live checkout is broken and customers cannot pay right now.",
    ],
    ("technical", "high"): ["It is blocking our release today."],
    ("billing", "urgent"): [
        "Our account will be suspended tonight unless this is fixed immediately.",
    ],
    ("billing", "high"): ["I need it corrected today so our books can close."],
    ("shipping", "urgent"): [
        "It is a gift for an event tomorrow morning, I need help immediately.",
    ],
    ("shipping", "high"): ["I need to know today where it is."],
    ("shipping", "low"): ["I do not need it until next month, so no hurry."],
    ("account", "urgent"): [
        "I have a client demo in 30 minutes and need access immediately.",
    ],
    ("feature_request", "high"): [
        "We need an answer today for our planning meeting.",
    ],
    ("feature_request", "low"): ["Just an idea for the roadmap, no rush at all."],
}

# Tone cues.  "" means no cue, which reads as neutral.
SENTIMENT_CUES = {
    "positive": [
        "Thanks so much, you folks are always super helpful!",
        "Love the product otherwise, keep up the good work.",
        "Really appreciate your help!",
        "Your team has been fantastic so far, thank you.",
        "Big fan of the service, thanks in advance!",
        "Thank you, the last agent I spoke to was wonderful.",
        "You guys rock, thanks a ton!",
        "Great service overall, many thanks!",
        "Thanks a lot, I really enjoy using your platform.",
    ],
    "neutral": [
        "",
        "",
        "Let me know if you need anything else from me.",
        "I can send screenshots if needed.",
        "Please advise on next steps.",
        "The account is registered under my work email.",
        "I am writing from the email on my account.",
        "Please confirm once it is done.",
        "What information do you need from me?",
    ],
    "negative": [
        "This is really frustrating.",
        "I am honestly fed up with this.",
        "Very disappointed, this is the third time I have written in.",
        "Unacceptable for what we pay.",
        "Seriously, how is this still not fixed?",
        "I am about to cancel over this.",
        "Your support has been useless so far.",
        "Not happy at all.",
        "this is ridiculous!!",
        "I am angry that nobody has answered my last two emails.",
    ],
}

GREETINGS = [
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hey team,",
    "Good morning,",
    "Hello support,",
    "Dear support team,",
    "Hey,",
    "Hi support,",
]
SIGN_OFFS = [
    "- Dana",
    "Regards, Mark",
    "Best, Priya",
    "Sent from my iPhone",
    "Kind regards, Lena Chen",
    "-- Omar, Acme Bakery",
    "Best regards, Tom",
    "- J",
    "Regards, Finance team",
    "Sofia",
]
# Common misspellings, applied to at most two words of a ticket.
TYPOS = {
    "the": "teh",
    "receive": "recieve",
    "account": "acount",
    "password": "pasword",
    "please": "pls",
    "you": "u",
    "because": "bc",
    "definitely": "definately",
    "charged": "chraged",
    "tracking": "trackign",
    "arrived": "arived",
    "invoice": "invoce",
    "really": "realy",
    "something": "somthing",
    "address": "adress",
    "would": "woudl",
}

# Slot values used inside the phrase templates.
SLOTS = {
    "card": ["Visa", "Mastercard", "Amex card", "debit card", "PayPal"],
    "plan": [
        "Pro plan",
        "Team plan",
        "Basic plan",
        "Business plan",
        "Starter plan",
        "annual plan",
    ],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "promo": ["SPRING20", "WELCOME10", "BFRIDAY25", "SAVE15", "VIP30"],
    "device": [
        "iPhone 14",
        "iPhone 12",
        "Pixel 7",
        "Samsung Galaxy S23",
        "iPad Air",
        "MacBook Pro",
        "Windows 11 laptop",
        "OnePlus 11",
        "Chromebook",
    ],
    "browser": [
        "Chrome",
        "Firefox",
        "Safari",
        "Edge",
        "Chrome on Windows",
        "Safari on my Mac",
    ],
    "error": [
        "error 500",
        "a 502 Bad Gateway",
        "'Something went wrong'",
        "a timeout",
        "error code E1043",
        "401 Unauthorized",
        "'unexpected token'",
    ],
    "integration": [
        "Slack",
        "Salesforce",
        "Shopify",
        "Zapier",
        "HubSpot",
        "QuickBooks",
        "Xero",
        "Google Sheets",
    ],
    "report": ["sales", "inventory", "monthly revenue", "customer", "refunds"],
    "email": [
        "j.smith@example.com",
        "maria.k@example.org",
        "tom.b@example.net",
        "accounts@acme-bakery.example",
        "li.wei@example.com",
        "p.novak@example.org",
    ],
    "name": [
        "Sarah Lee",
        "Ahmed Khan",
        "Julia Roberts",
        "Ken Tanaka",
        "Olga Petrova",
        "Luis Garcia",
    ],
    "carrier": ["UPS", "FedEx", "DHL", "USPS", "Royal Mail", "DPD"],
    "item": [
        "desk lamp",
        "coffee grinder",
        "phone case",
        "blender",
        "yoga mat",
        "ceramic vase",
        "wall clock",
        "kettle",
    ],
    "country": ["Canada", "Norway", "Mexico", "Australia", "Ireland", "New Zealand"],
    "city": ["Denver", "Leeds", "Austin", "Toronto", "Lyon", "Portland"],
    "export_fmt": ["Excel", "Google Sheets", "JSON", "XML"],
    "language": ["Portuguese", "Japanese", "Polish", "Turkish", "Korean"],
}


def random_date(rng: random.Random) -> str:
    month = rng.choice(SLOTS["month"])
    day = rng.randint(1, 28)
    return rng.choice(
        [
            f"{month} {day}",
            f"{rng.randint(1, 12)}/{day}",
            f"2024-{rng.randint(1, 12):02d}-{day:02d}",
            rng.choice(["Monday", "last Tuesday", "Friday", "the 12th", "the 3rd"]),
        ]
    )


def random_amount(rng: random.Random) -> str:
    dollars = rng.choice([9, 12, 19, 24, 29, 39, 49, 59, 79, 99, 149, 249])
    cents = rng.choice(["00", "99", "50", "95", "49"])
    return f"${dollars}.{cents}"


def random_order(rng: random.Random) -> str:
    number = rng.randint(10000, 99999)
    return rng.choice([f"#{number}", f"#{number}", f"#SO-{number}"])


def fill_slots(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in SLOTS.items()}
    values.update(
        order=random_order(rng),
        order2=random_order(rng),
        amount=random_amount(rng),
        date=random_date(rng),
        seats=rng.randint(8, 40),
        few=rng.randint(2, 7),
        n=rng.randint(5, 60),
        email2=rng.choice(SLOTS["email"][::-1]),
    )
    return template.format(**values)


def add_noise(text: str, rng: random.Random) -> str:
    """Lowercase / typo noise that keeps every label cue readable."""
    roll = rng.random()
    if roll < 0.15:
        text = text.lower().rstrip(".")
    elif roll < 0.35:
        words = [w for w in TYPOS if re.search(rf"\b{w}\b", text)]
        for word in rng.sample(words, min(len(words), rng.randint(1, 2))):
            text = re.sub(rf"\b{word}\b", TYPOS[word], text, count=1)
    return text


def make_ticket(
    rng: random.Random,
    category: str,
    priority: str,
    sentiment: str,
    used: set[tuple[str, str]],
) -> str | None:
    """Build one ticket, or None if its phrase skeleton was used before."""
    core = rng.choice(CORES[category])
    p_cue = rng.choice(PRIORITY_CUES[priority] + PRIORITY_EXTRA.get((category, priority), []))
    s_cue = rng.choice(SENTIMENT_CUES[sentiment])
    # A core sentence may be paired with a given cue only once, so no two
    # tickets differ by just a filled-in slot value.
    pairs = {(core, "p:" + p_cue), (core, "s:" + s_cue)}
    if pairs & used:
        return None
    used.update(pairs)

    core_text = fill_slots(core, rng)
    if core_text[-1] not in ".?!":
        core_text += "?" if core_text.startswith("how") else "."
    cues = [c for c in (p_cue, s_cue) if c]
    rng.shuffle(cues)
    # Urgency and complaints read naturally as an opener; thanks and
    # matter-of-fact remarks do not.
    openers = [p_cue] if p_cue and priority != "medium" else []
    openers += [s_cue] if sentiment == "negative" else []
    if openers and rng.random() < 0.3:
        lead = rng.choice(openers)
        parts = [lead, core_text, *(c for c in cues if c != lead)]
    else:
        parts = [core_text, *cues]
    text = " ".join(parts)
    if rng.random() < 0.5 and not text.startswith("URGENT"):
        text = f"{rng.choice(GREETINGS)}\n{text}"
    if rng.random() < 0.35:
        text = f"{text}\n{rng.choice(SIGN_OFFS)}"
    return add_noise(text, rng)


def is_well_formed(text: str) -> bool:
    """15-60 words and at most three sentences."""
    sentences = re.findall(r"[.!?]+(?=\s|$)", text)
    return 15 <= len(text.split()) <= 60 and len(sentences) <= 3


def balanced(values: list[str], total: int, rng: random.Random) -> list[str]:
    """`total` labels with every value (almost) equally often, shuffled."""
    labels = [values[i % len(values)] for i in range(total)]
    rng.shuffle(labels)
    return labels


def make_tickets(rng: random.Random) -> list[dict]:
    rows = []
    seen: set[str] = set()
    used: set[tuple[str, str]] = set()
    labels = zip(
        balanced(CATEGORIES, N_TICKETS, rng),
        balanced(PRIORITIES, N_TICKETS, rng),
        balanced(SENTIMENTS, N_TICKETS, rng),
        strict=True,
    )
    for category, priority, sentiment in labels:
        for _ in range(1000):
            text = make_ticket(rng, category, priority, sentiment, used)
            if text and text not in seen and is_well_formed(text):
                break
        else:
            raise RuntimeError("could not build a unique ticket")
        seen.add(text)
        answer = {"category": category, "priority": priority, "sentiment": sentiment}
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": json.dumps(answer)},
                ]
            }
        )
    return rows


# --------------------------------------------------------------------------
# Order extraction (Alpaca)
# --------------------------------------------------------------------------

ORDER_INSTRUCTION = (
    "Extract the product, quantity and unit price from the order message as "
    "JSON with the keys product, quantity and unit_price."
)

# (product as labelled, plural form or None, typical price range).  The
# plural always starts with the product name, so the label is a literal
# substring of every message.
PRODUCTS = [
    ("blue ceramic mug", "blue ceramic mugs", (6, 18)),
    ("USB-C cable (2m)", None, (5, 15)),
    ("wireless mouse", None, (12, 40)),
    ("A4 spiral notebook", "A4 spiral notebooks", (2, 8)),
    ("stainless steel water bottle", "stainless steel water bottles", (10, 30)),
    ("mechanical keyboard", "mechanical keyboards", (45, 140)),
    ("27-inch monitor", "27-inch monitors", (150, 380)),
    ("HDMI adapter", "HDMI adapters", (6, 20)),
    ("laptop stand", "laptop stands", (20, 60)),
    ("noise-cancelling headset", "noise-cancelling headsets", (60, 220)),
    ("black gel pen", "black gel pens", (1, 4)),
    ("whiteboard marker set", "whiteboard marker sets", (5, 15)),
    ("ergonomic office chair", "ergonomic office chairs", (120, 450)),
    ("bamboo cutting board", "bamboo cutting boards", (12, 35)),
    ("cast iron skillet", "cast iron skillets", (25, 70)),
    ("organic green tea (100g)", None, (4, 14)),
    ("espresso beans 1kg", None, (15, 35)),
    ("LED desk lamp", "LED desk lamps", (18, 55)),
    ("phone case for Pixel 8", None, (9, 29)),
    ("screen protector", "screen protectors", (4, 15)),
    ("cotton t-shirt (size M)", None, (8, 25)),
    ("grey hoodie", "grey hoodies", (25, 60)),
    ("running socks 3-pack", None, (9, 20)),
    ("canvas tote bag", "canvas tote bags", (5, 18)),
    ("yoga mat", "yoga mats", (15, 45)),
    ("resistance band set", "resistance band sets", (10, 30)),
    ("scented soy candle", "scented soy candles", (8, 26)),
    ("glass storage jar", "glass storage jars", (3, 12)),
    ("shipping box 30x20x15cm", None, (1, 3)),
    ("packing tape roll", "packing tape rolls", (2, 6)),
    ("thermal receipt paper roll", "thermal receipt paper rolls", (1, 5)),
    ("barcode scanner", "barcode scanners", (40, 130)),
    ("portable SSD 1TB", None, (70, 150)),
    ("microSD card 128GB", None, (12, 30)),
    ("power bank 20000mAh", None, (20, 55)),
    ("smart plug", "smart plugs", (9, 25)),
    ("AA batteries (pack of 8)", None, (5, 14)),
    ("desk organizer", "desk organizers", (10, 35)),
    ("wall calendar 2025", None, (8, 20)),
    ("leather notebook cover", "leather notebook covers", (18, 48)),
    ("stapler", "staplers", (6, 22)),
    ("box of paper clips", None, (1, 4)),
    ("french press", "french presses", (20, 50)),
    ("electric kettle", "electric kettles", (25, 80)),
    ("wooden coat hanger", "wooden coat hangers", (1, 5)),
    ("linen napkin", "linen napkins", (3, 10)),
    ("succulent in terracotta pot", None, (6, 18)),
    ("bike helmet", "bike helmets", (35, 110)),
    ("webcam 1080p", None, (30, 90)),
    ("label printer", "label printers", (60, 180)),
    ("hand sanitizer 500ml", None, (3, 9)),
    ("nitrile gloves (box of 100)", None, (7, 16)),
    ("safety goggles (pair)", None, (5, 20)),
    ("extension cord 5m", None, (10, 28)),
    ("dog chew toy", "dog chew toys", (4, 15)),
    ("kids' watercolor set", "kids' watercolor sets", (6, 20)),
    ("printer toner cartridge", "printer toner cartridges", (40, 120)),
    ("sticky note pad", "sticky note pads", (1, 4)),
    ("silk scarf", None, (20, 75)),
    ("wool beanie", "wool beanies", (12, 32)),
]

assert all(p is None or p.startswith(n) for n, p, _ in PRODUCTS)

NUMBER_WORDS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
    11: "eleven",
    12: "twelve",
}
CURRENCIES = ["USD", "USD", "EUR", "GBP"]

# Templates.  {name}: product as labelled, {plural}: plural form,
# {q}: quantity, {price}: price with currency, {bare}: price without it.
ANY_QTY_TEMPLATES = [
    "pls send {q}x {name} @ {bare}",
    "Order: {name} x{q}, {price} each",
    "{q} x {name} at {price} per unit, please.",
    "Need {name}, qty {q}, unit price {price}.",
    "Can you ship {q} units of {name}? Quoted price was {price} each.",
    "Please add {name} (quantity: {q}) to our order at {price} apiece.",
    "{name} - {q} pcs - {price}/pc",
    "Reorder {q} x {name} at {price} each like last time.",
    "Hello, we'd like to order {q} units of the {name} at {price} per unit. Thanks!",
    "PO request: {q} pieces of {name}, {price} each, deliver to the Leeds office.",
    "qty {q} / {name} / {price} ea",
    "Hi! Put me down for {name}, {q} units, {price} a unit.",
    "{q}x {name}, {price} ea. Ship by Friday if possible",
    "We need {q} more of the {name} - still {price} each?",
]
PLURAL_TEMPLATES = [
    "Hi, I'd like {q} of the {plural} at {price} each",
    "Could I get {q} {plural}? The site says {price} each.",
    "We need {q} {plural} for the new office, {price} a piece.",
    "I'll take {q} {plural} at {price} each, please.",
    "Send over {q} {plural} ({price} each) when you can.",
    "hey can u do {q} {plural} for {price} each",
    "Please order {q} {plural}; the price we agreed was {price} per item.",
]
SINGLE_TEMPLATES = [
    "Just one {name} please, listed at {price}.",
    "I'd like to buy a single {name} for {price}.",
    "1 {name} at {price}, please ship it this week.",
    "Can I order one {name}? Your catalogue says {price}.",
]


def random_price(rng: random.Random, low: int, high: int) -> float:
    whole = rng.randint(low, high)
    cents = rng.choice([0, 0, 99, 99, 50, 95, 49, 25, 75])
    return round(whole + cents / 100, 2)


def format_price(rng: random.Random, price: float) -> tuple[str, str]:
    """Return (price with currency, bare number) for one price."""
    is_whole = price == int(price)
    bare = f"{price:.2f}"
    if is_whole and rng.random() < 0.5:
        bare = str(int(price))
    currency = rng.choice(CURRENCIES)
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}[currency]
    with_currency = rng.choice(
        [
            f"{symbol}{bare}",
            f"{symbol}{bare}",
            f"{bare} {currency}",
            f"{currency} {bare}",
        ]
    )
    return with_currency, bare


def random_quantity(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(2, 12)
    if roll < 0.9:
        return rng.choice([15, 20, 24, 25, 30, 40, 48, 50])
    return rng.choice([60, 75, 100, 120, 150, 200, 250, 500])


def make_order(rng: random.Random, product: tuple, used: set[tuple[str, str]]) -> tuple[str, dict] | None:
    """Build one order, or None if this product already used the template."""
    name, plural, (low, high) = product
    price = random_price(rng, low, high)
    price_text, bare = format_price(rng, price)
    roll = rng.random()
    if roll < 0.1:
        quantity, template = 1, rng.choice(SINGLE_TEMPLATES)
    else:
        quantity = random_quantity(rng)
        use_plural = plural is not None and roll < 0.5
        template = rng.choice(PLURAL_TEMPLATES if use_plural else ANY_QTY_TEMPLATES)
    if (template, name) in used:
        return None
    used.add((template, name))
    q = str(quantity)
    if "{plural}" in template and quantity in NUMBER_WORDS and rng.random() < 0.4:
        q = NUMBER_WORDS[quantity]
    message = template.format(name=name, plural=plural, q=q, price=price_text, bare=bare)
    answer = {"product": name, "quantity": quantity, "unit_price": price}
    return message, answer


def make_orders(rng: random.Random) -> list[dict]:
    products = [PRODUCTS[i % len(PRODUCTS)] for i in range(N_ORDERS)]
    rng.shuffle(products)
    rows, seen, used = [], set(), set()
    for product in products:
        for _ in range(100):
            order = make_order(rng, product, used)
            if order and order[0] not in seen:
                message, answer = order
                break
        else:
            raise RuntimeError("could not build a unique order message")
        seen.add(message)
        rows.append(
            {
                "instruction": ORDER_INSTRUCTION,
                "input": message,
                "output": json.dumps(answer),
            }
        )
    return rows


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def print_summary(tickets: list[dict], orders: list[dict]) -> None:
    answers = [json.loads(r["messages"][2]["content"]) for r in tickets]
    words = [len(r["messages"][1]["content"].split()) for r in tickets]
    print(f"{TICKETS_FILE.name}: {len(tickets)} rows, {min(words)}-{max(words)} words")
    for key in ("category", "priority", "sentiment"):
        counts = Counter(a[key] for a in answers)
        print(f"  {key}: " + ", ".join(f"{label} {counts[label]}" for label in sorted(counts)))
    products = {json.loads(r["output"])["product"] for r in orders}
    print(f"{ORDERS_FILE.name}: {len(orders)} rows, {len(products)} distinct products")


def main() -> None:
    rng = random.Random(SEED)
    tickets = make_tickets(rng)
    orders = make_orders(rng)
    write_jsonl(TICKETS_FILE, tickets)
    write_jsonl(ORDERS_FILE, orders)
    print_summary(tickets, orders)


if __name__ == "__main__":
    main()
