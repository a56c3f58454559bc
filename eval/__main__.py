"""`python -m eval --model PATH --benchmarks okvqa,textvqa --shots 0,1,2,4,8 --out DIR [--config eval.yaml]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from configs.eval import load_eval_config
from configs.schema import ConfigError
from eval.run import evaluate
from eval.sources import DatasetUnavailable


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    parser.add_argument("--model", required=True, help="a local HF-format LLaVA folder, or a hub id (vllm back-end)")
    parser.add_argument("--benchmarks", type=_names, default=None, help="comma-separated; default: all configured")
    parser.add_argument("--shots", type=lambda text: [int(k) for k in _names(text)], default=None)
    parser.add_argument("--out", required=True, help="output folder (local or an fsspec URL)")
    parser.add_argument("--config", default=None, help="a YAML merged over configs/eval.yaml")
    parser.add_argument("--selection", choices=["rices", "random"], default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most N queries per benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_eval_config(args.config)
        overrides = {"selection": args.selection, "limit": args.limit}
        config = config.model_copy(update={key: value for key, value in overrides.items() if value is not None})
        summary = evaluate(config, args.model, args.out, args.benchmarks, args.shots)
    except (ConfigError, DatasetUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"table": summary["table"], "plot": summary["plot"], "average": summary["average"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
