"""Controlled knowledge sets ("worlds") and the user's corpus, one module per world.

Every world module implements the same contract:
- `build(section_cfg, seed) -> (docs, items, facts)`: lists of dicts matching the Doc, Item and
  Fact records (docs have origin "train"); same config and seed, same output.
- `closure(facts) -> set[(subject, relation, object)]`: every triple true in the world: the
  facts, their reversals and every deduction.
- `parse(sentence, facts) -> list[triple] | None`: the triples a sentence asserts, in the same
  relation names; None when it is not a recognised pattern or names unknown entities.
- `oracle(facts) -> list[(sentence, fact_ids)]`: true reversal and deduction sentences that the
  training documents do not state, each with the facts it derives from.
A world may also make validation items (`VALIDATION_PREFIX`): trained like every fact, tested
like the test items, disjoint from them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: World name -> module, in build order. The names are the keys of the `data:` config section.
WORLDS = {
    "reversals": "pipeline.worlds.reversals",
    "syllogisms": "pipeline.worlds.syllogisms",
    "semantic": "pipeline.worlds.semantic",
    "families": "pipeline.worlds.families",
    "celebrities": "pipeline.worlds.celebrities",
    "corpus": "pipeline.worlds.corpus",
}


#: Split names of validation items start with this: items made like the test items of the split
#: named after it ("val_reversal" mirrors "reversal"), sharing no item with them: on facts no test
#: item uses (reversals), on prompts (celebrities) or candidate triples (semantic, families) no
#: test item uses. A run scores them like every item; recipe choices (learning rate, epochs) are
#: made on them, never on the reported test splits.
VALIDATION_PREFIX = "val_"


def is_validation(split: str) -> bool:
    return split.startswith(VALIDATION_PREFIX)


class WorldError(ValueError):
    """A world that cannot be built as configured; the message starts with the offending key
    of the world's config section (e.g. "path: ...", "n_docs: ...")."""


class DataFileError(ValueError):
    """A malformed input file (the user's corpus, the celebrities folder); names file and line."""


def world_module(name: str) -> ModuleType:
    """The module implementing a world; a clear error for an unknown name."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; known worlds: {', '.join(WORLDS)}")
    return importlib.import_module(WORLDS[name])
