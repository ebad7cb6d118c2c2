"""Rows an engine reported as failed are generated again on the next run, and only those."""

from pipeline.augment.generation import generate_resumable, prepare_shard_dir, work_left


def make_shards(n_shards=3, per=3):
    return [{"shard": f"local-w-{s:04d}", "prefix_key": "", "prefix": "",
             "requests": [{"request_id": f"local/w/{s * per + i:06d}/0", "prompt": f"p{s}-{i}"} for i in range(per)]}
            for s in range(n_shards)]


def engine(asked, failing=frozenset()):
    """A fake engine: records the requests it is given; `failing` ones come back as errors (as vLLM reports them)."""
    def results(todo):
        for s in todo:
            for r in s["requests"]:
                asked.append(r["request_id"])
                bad = r["request_id"] in failing
                yield {"request_id": r["request_id"], "shard": s["shard"], "text": "" if bad else "out " + r["prompt"],
                       "status": "error: engine crashed" if bad else "ok", "prompt_tokens": 0 if bad else 3,
                       "new_tokens": 0 if bad else 2}
    return results


def test_failed_rows_are_retried_once_and_the_rest_kept(tmp_path):
    shards = make_shards()
    prepare_shard_dir(tmp_path, "plan")
    first: list[str] = []
    failing = {"local/w/000001/0", "local/w/000007/0"}
    done = generate_resumable(shards, tmp_path, engine(first, failing))
    assert len(first) == 9 and sum(r["status"].startswith("error") for rows in done.values() for r in rows) == 2
    todo, kept, retried = work_left(shards, tmp_path)
    assert retried == 2 and [s["shard"] for s in todo] == ["local-w-0000", "local-w-0002"]
    assert {s["shard"]: len(rows) for s, rows in zip(todo, kept.values())} == {"local-w-0000": 2, "local-w-0002": 2}

    second: list[str] = []
    done = generate_resumable(shards, tmp_path, engine(second))
    assert sorted(second) == sorted(failing)  # only the failed rows went to the engine again
    rows = [r for s in shards for r in done[s["shard"]]]
    assert sorted(r["request_id"] for r in rows) == sorted(r["request_id"] for s in shards for r in s["requests"])
    assert all(r["status"] == "ok" and r["text"] for r in rows)  # every request exactly once, none failed
    assert work_left(shards, tmp_path) == ([], {}, 0)
