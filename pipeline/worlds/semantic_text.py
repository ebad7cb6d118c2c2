"""Sentences of the semantic world: the templates it writes with, and the parser that reads them.

Nonsense words stay lower case everywhere (as in the paper: "gruds are abmes"); only template
words are capitalised. Template families, all over (subject, relation, object):
- TRAIN: three phrasings per relation, used in training documents (and, for facts never
  stated, in deduction and holdout test items and in oracle sentences);
- QUESTION: the question half of a QA document's pair (the answer is a TRAIN sentence);
- REPHRASE: a same-direction phrasing used only by test items;
- REVERSE: a phrasing of each inverse relation ("One kind of abme is the grud"), used only by
  test items and oracle sentences.
The parser also accepts plural phrasings ("gruds are rony", "gruds have blick").
"""

from __future__ import annotations

import re

from pipeline.worlds.templates import (PerFacts, article, compile_template, lead_in_pattern,
                                       normalise, parse_text, strip_lead_in)

#: Relations that have an inverse, and the inverse's name.
INVERSE = {"is_a": "includes", "has": "part_of", "eats": "eaten_by", "lives_in": "home_of",
           "made_of": "material_of"}
FORWARD = {inv: rel for rel, inv in INVERSE.items()}
TRAIN = {
    "is_a": ("{A} {s} is a kind of {o}", "Every {s} is {a} {o}", "The {s} is a type of {o}"),
    "is": ("{A} {s} is {o}", "Every {s} is {o}", "The {s} is known to be {o}"),
    "can": ("{A} {s} can {o}", "Every {s} is able to {o}", "The {s} knows how to {o}"),
    "has": ("{A} {s} has {o}", "Every {s} has {o}", "The {s} comes with {o}"),
    "eats": ("{A} {s} eats {o}", "Every {s} feeds on {o}", "The {s} likes to eat {o}"),
    "lives_in": ("{A} {s} lives in {o}", "Every {s} makes its home in {o}", "The {s} is found in {o}"),
    "made_of": ("{A} {s} is made of {o}", "Every {s} is built from {o}", "The {s} consists of {o}"),
}
QUESTION = {
    "is_a": "Q: What kind of thing is {a} {s}?", "is": "Q: What is {a} {s} like?",
    "can": "Q: What can {a} {s} do?", "has": "Q: What does {a} {s} have?",
    "eats": "Q: What does {a} {s} eat?", "lives_in": "Q: Where does {a} {s} live?",
    "made_of": "Q: What is {a} {s} made of?",
}
REPHRASE = {
    "is_a": "{A} {s} belongs to the group called {o}", "is": "One trait of the {s} is being {o}",
    "can": "One thing the {s} is able to do is {o}", "has": "One part of the {s} is {o}",
    "eats": "The diet of the {s} includes {o}", "lives_in": "The natural home of the {s} is {o}",
    "made_of": "The material of the {s} is {o}",
}
REVERSE = {
    "includes": "One kind of {s} is the {o}", "part_of": "{s} is a part of the {o}",
    "eaten_by": "{s} is eaten by the {o}", "home_of": "{s} is home to the {o}",
    "material_of": "{s} is used to make the {o}",
}
PLURAL = {
    "is_a": ("{s} are a kind of {o}", "{A} {s} is {a} {o}"), "is": ("{s} are {o}",),
    "can": ("{s} can {o}",), "has": ("{s} have {o}",), "eats": ("{s} eat {o}",),
    "lives_in": ("{s} live in {o}",), "made_of": ("{s} are made of {o}",),
}
#: Discourse markers that may open a training sentence.
MARKERS = ("In addition,", "Also,", "Notably,", "Furthermore,", "Moreover,")
_LEAD = lead_in_pattern(MARKERS + ("A:",))


def render(template: str, s: str, o: str = "") -> str:
    """Fill a template; `{A}`/`{a}` become the article of the word after them."""
    out = template.replace("{A} {s}", article(s).capitalize() + " {s}").replace("{a} {s}", article(s) + " {s}")
    out = out.replace("{a} {o}", article(o) + " {o}")
    return out.format(s=s, o=o)


def split_item(template: str, s: str, o: str) -> tuple[str, str]:
    """(prompt, choice) of a test statement whose last slot is the answer: 'A grud is' + ' rony'."""
    last = template.rsplit(" ", 1)
    if last[1] not in ("{o}",):
        raise ValueError(f"template {template!r} does not end with its object slot")
    return render(last[0], s, o), " " + o


def _compiled() -> list[tuple[str, re.Pattern]]:
    out = []
    for rel, templates in TRAIN.items():
        families = (REPHRASE[rel],) + templates + PLURAL[rel]
        out += [(rel, compile_template(t)) for t in families]
    out += [(rel, compile_template(t)) for rel, t in REVERSE.items()]
    # Most specific (longest) templates first, so "is made of" wins over "is".
    return sorted(out, key=lambda p: -len(p[1].pattern))


_PATTERNS = _compiled()


def _lexicon_of(facts: list[dict]) -> tuple[set[str], dict[str, set[str]]]:
    """(category words, relation -> words that may be its object) from a world's facts."""
    triples = [(f["subject"], f["relation"], f["object"]) for f in facts]
    categories = {w for s, r, o in triples if r == "is_a" for w in (s, o)} | {s for s, _, _ in triples}
    objects: dict[str, set[str]] = {}
    for _, r, o in triples:
        objects.setdefault(r, set()).add(o)
    return categories, objects


lexicon_of = PerFacts(_lexicon_of)


def _word(w: str, known: set[str]) -> str | None:
    w = w.lower()
    if w in known:
        return w
    return w[:-1] if w.endswith("s") and w[:-1] in known else None


def parse_sentence(sentence: str, categories: set[str], objects: dict[str, set[str]]):
    text = strip_lead_in(normalise(sentence), _LEAD)
    for rel, pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if not m:
            continue
        forward = FORWARD.get(rel, rel)
        cat_slot, obj_slot = ("o", "s") if rel in FORWARD else ("s", "o")
        cat = _word(m[cat_slot], categories)
        obj = _word(m[obj_slot], objects.get(forward, set()))
        if cat is not None and obj is None and forward == "is":
            obj, forward, rel = _word(m[obj_slot], categories), "is_a", "is_a"  # "a grud is abme"
        if cat is None or obj is None:
            continue
        return [(obj, rel, cat)] if rel in FORWARD else [(cat, rel, obj)]
    return None


def parse(text: str, facts: list[dict]) -> list[tuple[str, str, str]] | None:
    categories, objects = lexicon_of(facts)
    return parse_text(text, lambda s: parse_sentence(s, categories, objects))
