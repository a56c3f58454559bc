"""Scale-out paths on real infrastructure started here: local Ray and Dask clusters, and an S3-compatible server
(moto) on 127.0.0.1 as the output store. Each must give the same shard content as a local run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import load_config
from pipeline.inputs import resolve_inputs
from storage.outdir import OutDir
from tests.conftest import PART2, run_all_stages, shard_files
from tests.test_end_to_end import textbook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_samples(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    config = load_config(None)
    out = OutDir(tmp_path_factory.mktemp("local") / "out")
    workspace, _ = run_all_stages(out, config, resolve_inputs(PART2, config.input).videos)
    return pq.read_table(shard_files(workspace.out)[0]).to_pylist()


@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_cluster_runner_gives_the_local_shards(tmp_path: Path, local_samples, runner: str):
    out = tmp_path / "out"
    result = textbook("run", "--input", str(PART2), "--out", str(out), "--runner", runner, home=tmp_path / "p")
    assert result.returncode == 0, result.stderr[-3000:]
    assert pq.read_table(shard_files(out)[0]).to_pylist() == local_samples


def test_s3_output_reads_back_identically(tmp_path: Path, local_samples, monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
        for key, value in credentials.items():
            monkeypatch.setenv(key, value)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("textbook")
        result = textbook("run", "--input", str(PART2), "--out", "s3://textbook/run", home=tmp_path / "p")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "s3://textbook/run/shards/" in result.stdout
        (entry,) = json.loads(fs.cat("textbook/run/shards/index.json"))["shards"]
        with fs.open(f"textbook/run/shards/{entry['file']}", "rb") as handle:
            assert pq.read_table(handle).to_pylist() == local_samples
        names = fs.find("textbook/run")
        assert not [name for name in names if name.endswith(".partial")]
        assert "textbook/run/summary.json" in names and "textbook/run/stages/ocr/lecture_part2.parquet" in names
        second = textbook("run", "--input", str(PART2), "--out", "s3://textbook/run", home=tmp_path / "p")
        assert "nothing to run" in second.stdout, second.stdout[-2000:] + second.stderr[-2000:]
    finally:
        server.stop()
