"""Held-out metrics by kind of answer: class labels, JSON objects or free text.

The kind is decided from the expected answers alone (:func:`kind_of`), so the base and the fine-tuned
model are measured the same way:

* ``json``: every expected answer is a JSON object. Per field: the share of answers with the expected
  value (a missing field, or an answer that is no JSON object, counts as wrong); a field whose values
  look like class labels (:func:`label_set`: the tickets' category, priority, sentiment) also gets
  precision / recall / F1 per value, macro-F1 and a confusion matrix.
* ``labels``: the expected answers look like class labels (:func:`label_set`): accuracy (= exact
  match), precision / recall / F1 per label, macro-F1 and a confusion matrix whose rows are the
  expected labels and whose columns are the labels answered, then ``other`` for an answer that is none
  of them ("Positive." is not "positive": the comparison is the exact match's).
* ``text``: the rest. Exact match, the share of answers that ended at the end-of-turn token rather than
  at the token budget, the answer's length against the expected one, and a word-overlap F1.

Every kind gets a 95% Wilson interval for its headline figure (exact match for labels and text, field
accuracy for JSON), so "81%" from 36 answers reads "81% (65-90%)"; and the stop rate when the
generation says which answers stopped.

Plain Python: the arithmetic is counting. scikit-learn would add scipy (~200 MB installed, too much to
travel to a GPU machine with the trainer's wheels) for it; the tests check these numbers against
``sklearn.metrics`` instead, a checker written by other hands.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any


def parse_json_object(text: str) -> dict | None:
    """The answer as a JSON object, tolerating a Markdown code fence around it."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").strip()
        if text[:4].lower() == "json":
            text = text[4:]
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def score(expected: str, output: str) -> dict[str, Any]:
    """Scores of one answer.

    >>> score('{"a": 1, "b": 2}', '{"a": 1, "b": 3}')
    {'exact': False, 'json_expected': True, 'json_valid': True, 'fields': 2, 'fields_matched': 1}
    """
    s: dict[str, Any] = {"exact": output.strip() == expected.strip()}
    want = parse_json_object(expected)
    s["json_expected"] = want is not None
    if want is not None:
        got = parse_json_object(output)
        s["json_valid"] = got is not None
        s["fields"] = len(want)
        s["fields_matched"] = sum(1 for k, v in want.items() if got is not None and same_value(got.get(k), v))
    return s


def summarize(scores: list[dict[str, Any]]) -> dict[str, float]:
    n = len(scores)
    out = {"examples": n, "exact_match": round(sum(s["exact"] for s in scores) / n, 4) if n else 0.0}
    js = [s for s in scores if s["json_expected"]]
    if js:
        out["json_valid"] = round(sum(s["json_valid"] for s in js) / len(js), 4)
        fields = sum(s["fields"] for s in js)
        out["field_match"] = round(sum(s["fields_matched"] for s in js) / fields, 4) if fields else 0.0
    return out


MAX_LABELS = 20
"""At most this many distinct values make a label set; more read as free text (or as an open field)."""
MAX_LABEL_CHARS = 40
"""A label is one line of at most this many characters."""
OTHER = "other"
"""The confusion matrix's last column: answers that are none of the labels (or a missing field)."""
HEADLINE = {"labels": "exact_match", "json": "field_match", "text": "exact_match"}
"""The figure of each kind that gets the interval (a key of summarize's result)."""
_MISSING = object()


def label_name(value: Any) -> str:
    """A label value as text: strings as they are, other JSON values as JSON.

    >>> label_name("high"), label_name(3), label_name(True), label_name(None)
    ('high', '3', 'true', 'null')
    """
    return value if isinstance(value, str) else json.dumps(value)


def label_set(values: list[Any]) -> list[str] | None:
    """The sorted label names of `values` when they look like class labels, else None.

    The rule: every value is a string of one line and at most MAX_LABEL_CHARS characters, an integer,
    a boolean or null (floats are measurements, not classes); there are 2 to MAX_LABELS distinct
    values; and there are at least twice as many values as distinct ones (each label is seen twice on
    average, so a label set is not mistaken for short unique answers such as names or cities).

    >>> label_set(["pos", "neg", "pos", "neg", "pos"])
    ['neg', 'pos']
    >>> label_set(["Paris", "Rome", "Oslo", "Bern"]) is None  # every answer unique
    True
    >>> label_set([12.5, 3.0, 12.5, 3.0]) is None  # numbers with decimals are measurements
    True
    """
    if not all(
        v is None or isinstance(v, (bool, int)) or (isinstance(v, str) and len(v) <= MAX_LABEL_CHARS and "\n" not in v)
        for v in values
    ):
        return None
    names = {label_name(v) for v in values}
    if not 2 <= len(names) <= MAX_LABELS or len(values) < 2 * len(names):
        return None
    return sorted(names)


def kind_of(expected: list[str]) -> str:
    """'json', 'labels' or 'text': what the expected answers are (the module docstring says how).

    >>> kind_of(['{"a": 1}', '{"a": 2}']), kind_of(["yes", "no", "no", "yes"]), kind_of(["Paris", "Rome"])
    ('json', 'labels', 'text')
    """
    if expected and all(parse_json_object(e) is not None for e in expected):
        return "json"
    if label_set([e.strip() for e in expected]) is not None:
        return "labels"
    return "text"


def label_metrics(truth: list[str], answers: list[str | None], labels: list[str]) -> dict[str, Any]:
    """Precision / recall / F1 per label, macro-F1 and the confusion matrix.

    `truth` holds label names from `labels`; an answer that is not one of them counts in the ``other``
    column (a false negative of its row's label, a false positive of none). Precision of a label never
    answered is 0, as is F1 when precision and recall are both 0 (scikit-learn's zero_division=0).

    >>> m = label_metrics(["a", "a", "b"], ["a", "b", "zzz"], ["a", "b"])
    >>> m["confusion"], m["labels"]["a"], round(m["macro_f1"], 4)
    ([[1, 1, 0], [0, 0, 1]], {'precision': 1.0, 'recall': 0.5, 'f1': 0.6667, 'support': 2}, 0.3333)
    """
    index = {name: i for i, name in enumerate(labels)}
    k = len(labels)
    confusion = [[0] * (k + 1) for _ in range(k)]
    for t, a in zip(truth, answers, strict=True):
        confusion[index[t]][index.get(a, k) if a is not None else k] += 1
    per: dict[str, dict[str, Any]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp, support, answered = confusion[i][i], sum(confusion[i]), sum(row[i] for row in confusion)
        p = tp / answered if answered else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        f1s.append(f1)
        per[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "support": support}
    return {
        "macro_f1": round(sum(f1s) / k, 4) if k else 0.0,
        "labels": per,
        "label_order": list(labels),
        "confusion": confusion,
    }


def json_metrics(expected: list[str], outputs: list[str]) -> dict[str, Any]:
    """Per field of the expected JSON objects: accuracy and support, and label metrics for label-like fields.

    >>> f = json_metrics(['{"a": 1, "b": "x"}', '{"a": 2}'], ['{"a": 1, "b": "y"}', 'no json'])["fields"]
    >>> f["a"], f["b"]
    ({'accuracy': 0.5, 'support': 2}, {'accuracy': 0.0, 'support': 1})
    """
    wants = [parse_json_object(e) or {} for e in expected]
    gots = [parse_json_object(o) for o in outputs]
    names = list(dict.fromkeys(k for w in wants for k in w))  # in the order the answers give them
    fields: dict[str, dict[str, Any]] = {}
    for name in names:
        pairs = [
            (w[name], g.get(name, _MISSING) if g is not None else _MISSING)
            for w, g in zip(wants, gots, strict=True)
            if name in w
        ]
        correct = sum(1 for w, g in pairs if g is not _MISSING and same_value(g, w))
        entry: dict[str, Any] = {"accuracy": round(correct / len(pairs), 4), "support": len(pairs)}
        labels = label_set([w for w, _ in pairs])
        if labels is not None:
            values = {label_name(w): w for w, _ in pairs}
            answers = [answered_label(g, values) for _, g in pairs]
            entry.update(label_metrics([label_name(w) for w, _ in pairs], answers, labels))
        fields[name] = entry
    return {"fields": fields}


def answered_label(value: Any, labels: dict[str, Any]) -> str | None:
    """The name of the label `value` is (JSON equality: 1 == 1.0, true is not 1), or None."""
    if value is _MISSING or isinstance(value, (dict, list)):
        return None
    return next((name for name, v in labels.items() if same_value(value, v)), None)


WORD = re.compile(r"\w+")


def word_f1(expected: str, output: str) -> float:
    """Word-overlap F1 of an answer (SQuAD's answer F1; ROUGE-1 F without stemming): the words in common,
    counted with repeats, over the answer's and the expected answer's words, lower-cased.

    >>> word_f1("The cat sat on the mat", "the cat sat"), word_f1("", ""), word_f1("a", "b")
    (0.6667, 1.0, 0.0)
    """
    want, got = Counter(WORD.findall(expected.lower())), Counter(WORD.findall(output.lower()))
    if not want or not got:
        return float(want == got)
    common = sum((want & got).values())
    if not common:
        return 0.0
    p, r = common / sum(got.values()), common / sum(want.values())
    return round(2 * p * r / (p + r), 4)


def text_metrics(expected: list[str], outputs: list[str]) -> dict[str, Any]:
    """Length against the expected answer (mean of the ratios of characters) and mean word-overlap F1.

    >>> text_metrics(["abcd", "ab"], ["abcd", "abcdef"])
    {'length_ratio': 2.0, 'word_f1': 0.5}
    """
    ratios = [len(o.strip()) / len(e.strip()) for e, o in zip(expected, outputs, strict=True) if e.strip()]
    f1s = [word_f1(e, o) for e, o in zip(expected, outputs, strict=True)]
    return {
        "length_ratio": round(sum(ratios) / len(ratios), 4) if ratios else 0.0,
        "word_f1": round(sum(f1s) / len(f1s), 4) if f1s else 0.0,
    }


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% with z = 1.96) of a share `p` observed in `n` trials.

    Unlike p +- 1.96 * sqrt(p(1-p)/n) it stays inside 0..1 and is not empty at 0% or 100%.

    >>> wilson(0.5, 100), wilson(0.0, 10), wilson(1.0, 0)
    ((0.4038, 0.5962), (0.0, 0.2775), (0.0, 1.0))
    """
    if n <= 0:
        return 0.0, 1.0
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def measure(
    expected: list[str], outputs: list[str], stopped: list[bool] | None = None, labels: list[str] | None = None
) -> dict[str, Any]:
    """One model's metrics beyond summarize's (whose keys it leaves alone), for [results].

    ``kind``; ``headline`` (the summarize key the interval is of) and ``interval`` [low, high]; ``stop_rate``
    when `stopped` says which answers ended at the end-of-turn token; then by kind: ``macro_f1``,
    ``labels`` {label: precision, recall, f1, support}, ``label_order`` and ``confusion`` (labels);
    ``fields`` {field: accuracy, support, and for label-like fields the same four} (json);
    ``length_ratio`` and ``word_f1`` (text).

    The interval of JSON field accuracy counts answers, not fields: the fields of one answer go wrong
    together (an answer that is no JSON loses them all), so counting each as a trial would claim more
    certainty than the answers hold.

    >>> m = measure(["yes", "no", "yes", "no"], ["yes", "no", "no", "maybe"], [True, True, True, False])
    >>> m["kind"], m["headline"], m["interval"], m["stop_rate"], m["macro_f1"], m["confusion"]
    ('labels', 'exact_match', [0.15, 0.85], 0.75, 0.5833, [[1, 0, 1], [1, 1, 0]])

    `labels`: the label set when the data says it is one (a mapped answer column): the answers are judged
    as labels whatever the length of their names.
    """
    if not expected:
        return {}
    kind = "labels" if labels else kind_of(expected)
    headline = HEADLINE[kind]
    value = summarize([score(e, o) for e, o in zip(expected, outputs, strict=True)]).get(headline, 0.0)
    out: dict[str, Any] = {"kind": kind, "headline": headline, "interval": list(wilson(value, len(expected)))}
    if stopped is not None and len(stopped) == len(expected):
        out["stop_rate"] = round(sum(map(bool, stopped)) / len(stopped), 4)
    if kind == "labels":
        truth = [e.strip() for e in expected]
        out.update(label_metrics(truth, [o.strip() for o in outputs], labels or label_set(truth) or []))
    elif kind == "json":
        out.update(json_metrics(expected, outputs))
    else:
        out.update(text_metrics(expected, outputs))
    return out


# -- the headline in words (`tunewiz show`, the history screen, a run's notification) ----------------

HEADLINE_WORDS = {"labels": "accuracy", "json": "fields correct", "text": "exact match"}


def pct(x: Any) -> str:
    """A share as a percentage; '-' when it was not measured.

    >>> pct(0.583), pct(None)
    ('58%', '-')
    """
    return f"{x:.0%}" if isinstance(x, (int, float)) else "-"


def dec(x: Any) -> str:
    """A 0..1 score with two decimals; '-' when it was not measured."""
    return f"{x:.2f}" if isinstance(x, (int, float)) else "-"


def with_interval(m: dict[str, Any]) -> str:
    """A model's headline figure with its 95% interval.

    >>> with_interval({"kind": "labels", "headline": "exact_match", "exact_match": 0.81, "interval": [0.75, 0.86]})
    '81% (75-86%)'
    """
    iv = m.get("interval")
    value = pct(m.get(m.get("headline", "exact_match")))
    if not (isinstance(iv, list) and len(iv) == 2 and value != "-"):
        return value
    return f"{value} ({iv[0] * 100:.0f}-{iv[1] * 100:.0f}%)"


def headline_text(results: dict[str, Any]) -> str:
    """The held-out result in one line: the fine-tuned model's headline with its interval, the base's.

    >>> headline_text({"base": {"kind": "labels", "headline": "exact_match", "exact_match": 0.2, "macro_f1": 0.1},
    ...                "finetuned": {"kind": "labels", "headline": "exact_match", "exact_match": 0.81,
    ...                              "interval": [0.75, 0.86], "macro_f1": 0.79}})
    'held-out accuracy 81% (75-86%), base 20%; macro-F1 0.79, base 0.10'
    """
    base, ft = results.get("base") or {}, results.get("finetuned") or {}
    kind = ft.get("kind")
    if kind not in HEADLINE_WORDS:
        return ""
    out = f"held-out {HEADLINE_WORDS[kind]} {with_interval(ft)}, base {pct(base.get(ft.get('headline')))}"
    if "macro_f1" in ft:
        out += f"; macro-F1 {dec(ft['macro_f1'])}, base {dec(base.get('macro_f1'))}"
    return out
