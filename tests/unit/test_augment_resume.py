"""Shard files and resumption, with a fake generator in place of Ray (the Ray run is in integration)."""

import pytest

from pipeline.augment.generation import generate_resumable, prepare_shard_dir, read_shard


def make_shards(n_shards=4, per=3):
    return [{"shard": f"local-w-{s:04d}", "prefix_key": "", "prefix": "",
             "requests": [{"request_id": f"local/w/{s * per + i:06d}/0", "prompt": f"p{s}-{i}"} for i in range(per)]}
            for s in range(n_shards)]


def fake_results(calls):
    def results(todo):
        calls.append([s["shard"] for s in todo])
        # rows of different shards interleaved, as a pool of actors would return them
        rows = [(i, s, r) for s in todo for i, r in enumerate(s["requests"])]
        for i, s, r in sorted(rows, key=lambda x: x[0]):
            yield {"request_id": r["request_id"], "shard": s["shard"], "text": "out " + r["prompt"],
                   "status": "ok", "prompt_tokens": 3, "new_tokens": 2}
    return results


class Interrupt(Exception):
    pass


def interrupt_after(n):
    def hook(written):
        if written >= n:
            raise Interrupt(f"stopped after {written} shards")
    return hook


def test_interrupted_run_resumes_and_every_request_comes_back_once(tmp_path):
    shards = make_shards()
    prepare_shard_dir(tmp_path, "plan-a")
    calls = []
    with pytest.raises(Interrupt):
        generate_resumable(shards, tmp_path, fake_results(calls), after_shard=interrupt_after(2))
    assert len(list(tmp_path.glob("*.parquet"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet")}

    prepare_shard_dir(tmp_path, "plan-a")  # same plan: keep the finished shards
    done = generate_resumable(shards, tmp_path, fake_results(calls))
    assert len(calls[1]) == 2 and not set(calls[1]) & {n.removesuffix(".parquet") for n in first}
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet") if p.name in first} == first
    ids = [r["request_id"] for rows in done.values() for r in rows]
    assert sorted(ids) == sorted(r["request_id"] for s in shards for r in s["requests"])
    assert len(ids) == len(set(ids))
    assert read_shard(tmp_path, "local-w-0001")[0]["text"] == "out p1-0"


def test_a_finished_run_generates_nothing_again(tmp_path):
    shards = make_shards(2)
    prepare_shard_dir(tmp_path, "plan-a")
    calls = []
    generate_resumable(shards, tmp_path, fake_results(calls))
    generate_resumable(shards, tmp_path, fake_results(calls))
    assert len(calls) == 1


def test_a_changed_plan_starts_over(tmp_path):
    shards = make_shards(2)
    prepare_shard_dir(tmp_path, "plan-a")
    generate_resumable(shards, tmp_path, fake_results([]))
    prepare_shard_dir(tmp_path, "plan-b")
    assert not list(tmp_path.glob("*.parquet"))
    calls = []
    generate_resumable(shards, tmp_path, fake_results(calls))
    assert calls == [["local-w-0000", "local-w-0001"]]


def test_missing_or_unexpected_results_are_errors(tmp_path):
    shards = make_shards(2)
    prepare_shard_dir(tmp_path, "p")

    def short(todo):
        yield from list(fake_results([])(todo))[:-1]

    with pytest.raises(RuntimeError, match="1 shards incomplete"):
        generate_resumable(shards, tmp_path, short)

    def stray(todo):
        yield {"request_id": "nope", "shard": todo[0]["shard"], "text": "", "status": "ok", "prompt_tokens": 0, "new_tokens": 0}

    with pytest.raises(RuntimeError, match="unexpected request 'nope'"):
        generate_resumable(make_shards(3), tmp_path / "x", stray)
