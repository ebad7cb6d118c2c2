import multiprocessing as mp

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.records import Doc, Item, RecordError, Score, atomic_dir, atomic_path, read_records, write_records

ITEM = dict(item_id="i1", world="w", split="reversal", subtask="r", prompt="Q:", choices=[" a", " b"], answer_index=1, support_fact_ids=["f1"])


def test_round_trip_every_kind(tmp_path):
    rows = {
        Doc: [dict(doc_id="d1", world="w", text="Femp are big.", origin="train", source_doc_id=None, facts=["f1"], completion_start=0)],
        Item: [ITEM],
        Score: [dict(item_id="i1", condition="base", choice_logprobs=[-1.5, -0.25], choice_num_tokens=[1, 2], choice_num_chars=[2, 2])],
    }
    for kind, data in rows.items():
        path = tmp_path / f"{kind.__name__}.parquet"
        write_records(path, kind, data)
        assert read_records(path, kind) == data


def test_wrong_columns_are_rejected_on_read(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"item_id": ["a"], "bogus": [1]}), path)
    with pytest.raises(RecordError, match=r"not a Item table: missing columns \['world'.*unexpected columns \['bogus'\]"):
        read_records(path, Item)


def test_wrong_type_is_rejected_on_read(tmp_path):
    path = tmp_path / "x.parquet"
    write_records(path, Item, [ITEM])
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("answer_index"), "answer_index", pa.array(["1"]))
    pq.write_table(table, path)
    with pytest.raises(RecordError, match="column 'answer_index' has type string"):
        read_records(path, Item)


@pytest.mark.parametrize("change,message", [
    ({"choices": [" a"]}, "needs at least 2 choices"),
    ({"answer_index": 5}, "answer_index 5 out of range"),
    ({"prompt": "  "}, "prompt is empty"),
    ({"extra": 1}, "extra"),
    ({"answer_index": "1"}, "answer_index"),
])
def test_bad_rows_are_rejected_naming_the_item(tmp_path, change, message):
    with pytest.raises(RecordError, match=message) as err:
        write_records(tmp_path / "x.parquet", Item, [{**ITEM, **change}])
    assert "'i1'" in str(err.value)
    assert not (tmp_path / "x.parquet").exists()


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(RecordError, match="duplicate item_id"):
        write_records(tmp_path / "x.parquet", Item, [ITEM, ITEM])


def _write_then_die(path):
    import os

    with atomic_path(path) as tmp:
        tmp.write_text("half")
        os._exit(1)  # killed mid-write: no rename, no cleanup handlers


def test_interrupted_atomic_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.parquet"
    proc = mp.get_context("spawn").Process(target=_write_then_die, args=(target,))
    proc.start()
    proc.join()
    assert proc.exitcode == 1
    assert not target.exists()
    # an exception inside the block leaves neither the target nor a temporary file behind
    before = set(tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise RuntimeError("boom")
    assert set(tmp_path.iterdir()) == before
    assert not target.exists()


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "weights").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "config").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["CONTENTS.json", "config"]  # the old folder is gone, not merged


def test_written_files_get_the_usual_mode(tmp_path):
    import os

    path = tmp_path / "x.parquet"
    write_records(path, Item, [ITEM])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
