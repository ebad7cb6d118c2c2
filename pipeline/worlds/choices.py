"""Multiple-choice items: the correct option's position balanced, distractors in seeded order.

Worlds build items with the correct choice first (`answer_index` 0); `balance_answers` then
places the correct choice so that, within every (split, number of choices) group, each position
is the answer equally often (counts differ by at most one), and shuffles the distractors.
"""

from __future__ import annotations

import random
from collections import defaultdict


def balance_answers(items: list[dict], rng: random.Random) -> list[dict]:
    """Return copies of items (correct choice first on input) with balanced answer positions."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if item["answer_index"] != 0:
            raise ValueError(f"item {item['item_id']!r}: expected the correct choice first before balancing")
        groups[(item["split"], len(item["choices"]))].append(i)
    out = [dict(item) for item in items]
    for (_, n), members in sorted(groups.items()):
        positions = [k % n for k in range(len(members))]
        rng.shuffle(positions)
        for i, pos in zip(members, positions):
            correct, *wrong = out[i]["choices"]
            rng.shuffle(wrong)
            wrong.insert(pos, correct)
            out[i]["choices"] = wrong
            out[i]["answer_index"] = pos
    return out


def pick_distractors(candidates: list[str], n: int, rng: random.Random) -> list[str]:
    """Up to `n` distinct candidates in a seeded order (sorted first, so sets give stable output)."""
    pool = sorted(set(candidates))
    rng.shuffle(pool)
    return pool[:n]


def sample_evenly(candidates: list, subtask_of, cap: int | None, rng: random.Random) -> list:
    """Up to `cap` candidates (all if None), taken round-robin over sub-tasks in a seeded order,
    so every sub-task is represented as evenly as its candidates allow."""
    by_task: dict[str, list] = defaultdict(list)
    for c in candidates:
        by_task[subtask_of(c)].append(c)
    queues = [rng.sample(v, len(v)) for _, v in sorted(by_task.items())]
    out: list = []
    while any(queues) and (cap is None or len(out) < cap):
        for q in queues:
            if q and (cap is None or len(out) < cap):
                out.append(q.pop())
    return out
