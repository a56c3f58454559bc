"""LLaVA interleaved pretraining from shards: `train.run.train(config, shards, out, resume)` or `python -m train`
(under `torchrun` for several processes). No Prefect here; the flows wrap it."""
