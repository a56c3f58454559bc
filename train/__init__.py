"""LLaVA interleaved pretraining from shards (arrives with the training issue)."""
