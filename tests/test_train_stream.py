"""The training data stream: every sample once per epoch across ranks and dataloader workers, in a seeded order that
a resumed run continues exactly, shards in the order index.json lists."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from transformers import LlavaProcessor

from configs import CONFIG_DIR
from configs.train import TrainConfig, load_train_config
from storage.outdir import OutDir
from storage.schemas import SHARD
from storage.shards import ShardSet, Topic, publish_shards
from train.model import build_model
from train.shardset import from_pinned, list_units, pinned, read_unit
from train.stream import ShardStream, buffered_order, loader

CONFIG = CONFIG_DIR / "train-tiny.yaml"


def write_shard_set(folder: Path, rows: list[dict], rows_per_shard: int, rows_per_group: int) -> str:
    """Rows in the SHARD schema as `shard-NNNNN.parquet` files and the index.json that lists them."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for start in range(0, len(rows), rows_per_shard):
        part = rows[start : start + rows_per_shard]
        name = f"shard-{len(entries):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(part, schema=SHARD), folder / name, row_group_size=rows_per_group)
        entries.append({"file": name, "samples": len(part)})
    (folder / "index.json").write_text(json.dumps({"set": "test", "shards": entries}))
    return str(folder)


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (shade, 255 - shade, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def numbered_rows(count: int) -> list[dict]:
    """Sample n: its picture, then 'sample n'."""
    return [
        {
            "images": [{"bytes": _jpeg(n % 256), "path": f"{n}.jpg"}, None],
            "texts": [None, f"sample {n}"],
            "text_ocr_list": [None, f"sample {n}"],
            "metadata": json.dumps({"n": n}),
            "image_num": 1,
            "text_num": 1,
            "token_num": 3,
        }  # fmt: skip
        for n in range(count)
    ]


@pytest.fixture(scope="module")
def tiny() -> tuple[TrainConfig, LlavaProcessor]:
    cfg = load_train_config(CONFIG)
    return cfg, build_model(cfg.model, cfg.run.seed)[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """40 samples in 4 shards of 2 row groups each (8 units)."""
    return write_shard_set(tmp_path_factory.mktemp("stream") / "shards", numbered_rows(40), 10, 5)


def _stream(tiny, shards: str, *, rank: int = 0, world_size: int = 1, start=None, **data) -> ShardStream:
    cfg, processor = tiny
    units = list_units(ShardSet.at(shards))
    return ShardStream(units, cfg.data.model_copy(update=data), processor, 256, rank=rank, world_size=world_size,
                       epochs=2, seed=7, start=start)  # fmt: skip


def _ids(stream: ShardStream) -> list[int]:
    return [item.sample_id for item in stream]


@pytest.mark.parametrize("row_groups_per_consumer", ["whole row groups", "every n-th sample"])
def test_ranks_and_workers_split_each_epoch_into_disjoint_parts(tiny, shards, tmp_path, row_groups_per_consumer):
    """2 ranks x 2 dataloader workers = 4 consumers over 8 row groups (each takes whole ones), or over 1 row group
    (each takes every 4th sample): each epoch, every sample exactly once."""
    if row_groups_per_consumer == "every n-th sample":
        shards = write_shard_set(tmp_path / "one", numbered_rows(40), 40, 40)
    seen: dict[int, list[int]] = {}
    for rank in range(2):
        stream = _stream(tiny, shards, rank=rank, world_size=2, num_workers=2)
        for batch in loader(stream, batch_size=3, pad_token_id=0):
            (consumer,) = batch.positions
            seen.setdefault(consumer, []).extend(batch.sample_ids)
    assert sorted(seen) == [0, 1, 2, 3]
    for epoch in range(2):
        parts = [set(ids[len(ids) // 2 * epoch : len(ids) // 2 * (epoch + 1)]) for ids in seen.values()]
        assert sum(len(part) for part in parts) == 40
        assert set().union(*parts) == set(range(40))


def test_resumed_stream_continues_where_the_interrupted_one_stopped(tiny, shards):
    """The shuffle buffer's state is replayed from sample ids: from position p (in either epoch) the stream yields
    exactly what the uninterrupted one yielded after p."""
    whole = _ids(_stream(tiny, shards, shuffle_buffer=8))
    assert sorted(whole[:40]) == list(range(40)) and whole[:40] != list(range(40))
    for position in (0, 13, 40, 57):
        assert _ids(_stream(tiny, shards, shuffle_buffer=8, start={0: position})) == whole[position:]


def test_shuffle_is_seeded_and_in_order_reads_the_index_order(tiny, shards, tmp_path):
    assert _ids(_stream(tiny, shards)) == _ids(_stream(tiny, shards))
    assert buffered_order(list(range(40)), 8, random.Random(1)) != buffered_order(list(range(40)), 8, random.Random(2))
    in_order = _stream(tiny, shards, shuffle=False)
    assert _ids(in_order) == list(range(40)) * 2
    index = json.loads((Path(shards) / "index.json").read_text())
    index["shards"].reverse()
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    for entry in index["shards"]:
        (reordered / entry["file"]).write_bytes((Path(shards) / entry["file"]).read_bytes())
    (reordered / "index.json").write_text(json.dumps(index))
    texts = [item.sample.input_ids for item in _stream(tiny, str(reordered), shuffle=False)]
    first = tiny[1].tokenizer.decode(texts[0], skip_special_tokens=True)
    assert first.strip() == "sample 30"  # the last shard, listed first


def test_a_sample_without_images_is_skipped_and_counted(tiny, tmp_path):
    rows = numbered_rows(4)
    rows[1] = {**rows[1], "images": [None, None], "texts": ["only text", "here"], "image_num": 0}
    shards = write_shard_set(tmp_path / "noimage", rows, 4, 4)
    batches = list(loader(_stream(tiny, shards, shuffle=False, num_workers=0), batch_size=4, pad_token_id=0))
    assert batches[0].sample_ids == [0, 2, 3, 0] and batches[0].skipped == {"no_image": 1}


def test_resumed_workers_continue_the_dataloaders_turn(tiny, shards):
    """With 2 workers the dataloader alternates between them; after an odd number of batches a resumed run must
    start with the other worker's consumer, or its batches come in another order."""

    def stream(start=None, rotation=0):
        cfg, processor = tiny
        units = list_units(ShardSet.at(shards))
        return ShardStream(units, cfg.data.model_copy(update={"num_workers": 2}), processor, 256, rank=0,
                           world_size=1, epochs=1, seed=7, start=start, rotation=rotation)  # fmt: skip

    whole = [batch.sample_ids for batch in loader(stream(), batch_size=3, pad_token_id=0)]
    positions: dict[int, int] = {}
    for batch in list(loader(stream(), batch_size=3, pad_token_id=0))[:5]:
        positions.update(batch.positions)
    resumed = [batch.sample_ids for batch in loader(stream(positions, rotation=5 % 2), batch_size=3, pad_token_id=0)]
    assert resumed == whole[5:]


def _topic(name: str, version: int, rows: list[dict]) -> Topic:
    return Topic(name, f"{name}-v{version}", lambda: iter(rows), lambda: 10**9)  # one topic per shard


def test_a_run_keeps_reading_the_set_it_pinned_after_newer_ones_are_published(tmp_path):
    """The publisher moves a shard a newer set dropped under `shards-superseded/<the set that had it last>/`, which
    is not the pinned set when a shard outlived it: shard a of set 1 is kept by set 2 and only set 3 drops it, so it
    lands under set 2's folder. The pinned set still reads every sample, in its order."""
    out = OutDir(tmp_path)
    rows = numbered_rows(12)
    a, b, c = _topic("a", 1, rows[:3]), _topic("b", 1, rows[3:6]), _topic("c", 1, rows[9:])
    publish_shards(out, [a, b], target_bytes=1, keep_superseded_sets=3)
    first = ShardSet.open(out)
    publish_shards(out, [a, _topic("b", 2, rows[6:9])], target_bytes=1, keep_superseded_sets=3)
    second = ShardSet.open(out)
    publish_shards(out, [c], target_bytes=1, keep_superseded_sets=3)
    shard_a = first.shards[0]["file"]
    assert (tmp_path / "shards-superseded" / second.set_id / shard_a).is_file()
    assert not (tmp_path / "shards-superseded" / first.set_id / shard_a).exists()
    resumed = from_pinned(pinned(first))
    assert resumed.set_id == first.set_id != ShardSet.at(str(tmp_path / "shards")).set_id
    texts = [row["texts"][1] for unit in list_units(resumed) for row in read_unit(unit, ["texts"])]
    assert texts == [f"sample {n}" for n in range(6)]


def test_shards_on_an_fsspec_filesystem_read_the_same(tiny, shards):
    """The stream reads through fsspec: the same set copied to an in-memory filesystem yields the same samples."""
    memory = fsspec.filesystem("memory")
    for file in Path(shards).iterdir():
        memory.pipe(f"/train-test/shards/{file.name}", file.read_bytes())
    assert _ids(_stream(tiny, "memory://train-test/shards")) == _ids(_stream(tiny, shards))
