"""Few-shot evaluation of LLaVA-style models on the paper's six benchmarks, with RICES in-context examples and
scorers that match the official ones (`eval.scorers` is a public API).

Entry points: `eval.run.evaluate(config, model, out, benchmarks=None, shots=None) -> dict` with a config from
`configs.eval.load_eval_config(path)`, and `python -m eval --model PATH --out DIR [...]` (`eval/__main__.py`);
`eval.dag.eval_dag(config, model, benchmarks, shots)` is the same run as a stage of the engine (`textbook eval`).
"""
