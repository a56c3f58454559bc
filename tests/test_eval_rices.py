"""In-context example selection: RICES order on images whose similarity is known by construction, its cache, the
seeded random baseline, and the query never among its own examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.eval import EvalConfig, parse_eval_config
from eval.items import Example, load_examples
from eval.rices import cached_embeddings, excluded_shots, load_embedder, most_similar, random_shots
from eval.run import EvalRun
from storage.outdir import OutDir

FIXTURES = Path(__file__).parent / "data" / "benchmarks"
BLENDS_BY_WEIGHT = ["okvqa_train/2000", "okvqa_train/2001", "okvqa_train/2002", "okvqa_train/2003"]  # 0.2 .. 0.8
COPY_OF_QUERY = "okvqa_train/2099"


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_most_similar_puts_the_closest_last_and_skips_the_excluded() -> None:
    support = np.stack([unit(1, 0), unit(0.6, 0.8), unit(0.8, 0.6), unit(0, 1), unit(0.99, 0.1)])
    query = unit(1, 0)
    assert most_similar(query, support, 3, set()) == [2, 4, 0]
    assert most_similar(query, support, 3, {0}) == [1, 2, 4]
    assert most_similar(query, support, 9, {0, 4}) == [3, 1, 2]  # fewer left than asked
    assert most_similar(query, support, 0, set()) == []


def example(item_id: str, image: bytes) -> Example:
    return Example(id=item_id, image=image, question="q", answers=("a",), example_answer="a")


def test_the_query_by_id_or_by_image_is_excluded() -> None:
    query = example("set/1", b"query image")
    support = [example("set/1", b"other"), example("other/7", b"query image"), example("other/8", b"different")]
    assert excluded_shots(query, support) == {0, 1}


def test_random_shots_are_seeded_per_query_whatever_the_order() -> None:
    query, other = example("set/1", b"x"), example("set/2", b"y")
    first = random_shots(0, "okvqa", query, 20, 4, {3})
    random_shots(0, "okvqa", other, 20, 4, set())  # drawing for another query first changes nothing
    assert random_shots(0, "okvqa", query, 20, 4, {3}) == first
    assert random_shots(0, "okvqa", other, 20, 4, {3}) != first
    assert random_shots(1, "okvqa", query, 20, 4, {3}) != first
    assert 3 not in first and len(set(first)) == 4
    assert sorted(random_shots(0, "okvqa", query, 5, 9, {0})) == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def okvqa_config(tmp_path_factory: pytest.TempPathFactory) -> EvalConfig:
    folder = str(FIXTURES / "okvqa")
    return parse_eval_config(
        {
            "datasets": {"okvqa_val": {"path": folder}, "okvqa_train": {"path": folder}},
            "rices": {"cache_dir": str(tmp_path_factory.mktemp("rices"))},
        }
    )


def test_rices_returns_the_blends_by_similarity_most_similar_last(okvqa_config: EvalConfig) -> None:
    queries = load_examples("okvqa_val", okvqa_config.datasets["okvqa_val"], [])
    support = load_examples("okvqa_train", okvqa_config.datasets["okvqa_train"], [])
    embedder = load_embedder(okvqa_config.rices)
    cache = Path(okvqa_config.rices.cache_dir)
    support_vectors = cached_embeddings(support, embedder, cache, "okvqa_train")
    query_vectors = cached_embeddings(queries, embedder, cache, "okvqa_val")
    assert np.allclose(np.linalg.norm(support_vectors, axis=1), 1, atol=1e-5)

    excluded = excluded_shots(queries[0], support)
    assert [support[i].id for i in excluded] == [COPY_OF_QUERY]  # the very image, under another id
    picked = most_similar(query_vectors[0], support_vectors, 4, excluded)
    assert [support[i].id for i in picked] == BLENDS_BY_WEIGHT
    everything = most_similar(query_vectors[0], support_vectors, len(support), excluded)
    assert COPY_OF_QUERY not in [support[i].id for i in everything] and len(everything) == len(support) - 1


def test_rices_embeddings_are_read_back_from_the_cache(okvqa_config: EvalConfig) -> None:
    support = load_examples("okvqa_train", okvqa_config.datasets["okvqa_train"], [])
    embedder = load_embedder(okvqa_config.rices)
    cache = Path(okvqa_config.rices.cache_dir) / "reuse"
    computed = cached_embeddings(support, embedder, cache, "okvqa_train")
    (file,) = cache.glob("okvqa_train-*.npy")
    np.save(file, computed[::-1])  # what is on disk is what a rerun gets: nothing is embedded again
    assert np.array_equal(cached_embeddings(support, embedder, cache, "okvqa_train"), computed[::-1])
    assert len(list(cache.glob("okvqa_train-*.npy"))) == 1
    cached_embeddings(support[:-1], embedder, cache, "okvqa_train")  # another set: another file
    assert len(list(cache.glob("okvqa_train-*.npy"))) == 2


@pytest.mark.parametrize("selection", ["rices", "random"])
def test_no_query_is_among_its_own_examples_even_with_itself_in_the_support(
    okvqa_config: EvalConfig, selection: str, tmp_path: Path
) -> None:
    benchmark = okvqa_config.benchmarks["okvqa"].model_copy(update={"support": "okvqa_val"})
    config = okvqa_config.model_copy(update={"selection": selection, "benchmarks": {"okvqa": benchmark}})
    run = EvalRun(config, "unused", OutDir(tmp_path), 2)
    queries = run.queries("okvqa")
    for query, shots in zip(queries, run.shots_for("okvqa", queries, 2), strict=True):
        assert sorted(shot.id for shot in shots) == sorted(q.id for q in queries if q.id != query.id)
    trained = EvalRun(okvqa_config.model_copy(update={"selection": selection}), "unused", OutDir(tmp_path), 8)
    (shots,) = trained.shots_for("okvqa", trained.queries("okvqa")[:1], 8)
    assert COPY_OF_QUERY not in [shot.id for shot in shots] and len(shots) == 7  # all 8 asked, its copy never given
