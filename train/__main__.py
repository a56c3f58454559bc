"""`python -m train --config configs/train-tiny.yaml --shards OUT/shards --out RUN [--resume]`, alone or as
`torchrun --nproc-per-node N --master-addr 127.0.0.1 -m train ...`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from configs.schema import ConfigError
from configs.train import load_train_config, parse_overrides
from train.run import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("--config", required=True, help="a training config (configs/train-tiny.yaml, ...)")
    parser.add_argument("--shards", required=True, help="the shard folder or fsspec URL (OUT/shards)")
    parser.add_argument("--out", required=True, help="the run folder: checkpoints, metrics, model")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. run.max_steps=10 (the value is read as YAML)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_train_config(args.config, parse_overrides(args.set))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = train(config, args.shards, args.out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # one summary, not one per torchrun process
        print(json.dumps({key: value for key, value in metrics.items() if key != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
