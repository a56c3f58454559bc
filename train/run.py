"""One training run: the model and data from config, the optimizer loop with gradient accumulation, checkpoints,
logs and the run folder. Runs alone or as one of `torchrun`'s processes; call `train(...)` from anywhere.

The run folder: `config.yaml`, `checkpoints/step-N/`, `metrics.json`, `loss.png`, `model/` (Hugging Face format).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import get_constant_schedule_with_warmup

from configs.schema import ConfigError
from configs.train import TrainConfig, dump_train_config, load_train_config
from storage.shards import ShardSet
from train import checkpoint
from train.batch import Batch
from train.distributed import Processes, all_sum, all_true, gather_objects, shard, start, stop
from train.export import export
from train.flops import FlopsModel, peak_flops
from train.model import build_model
from train.parts import add_lora, set_trainable
from train.report import plot_loss, write_file, write_metrics
from train.shardset import from_pinned, list_units, pinned
from train.stream import ShardStream, loader

logger = logging.getLogger(__name__)
MODEL_DIR = "model"
SAMPLES_LOG = "samples.jsonl"


def _logged_step(line: str) -> float:
    """The step of a sample-log line; a line a kill cut short counts as after every checkpoint (it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


@dataclass
class StepResult:
    loss: float
    grad_norm: float | None
    tokens: int
    images: int
    flops: float


def _precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The compute dtype below float32, or None for float32."""
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _take(batches, count: int) -> list[Batch]:
    taken = []
    for batch in batches:
        taken.append(batch)
        if len(taken) == count:
            break
    return taken


class Trainer:
    """The model, optimizer and schedule of a run, and its state (step, data positions, history)."""

    def __init__(self, cfg: TrainConfig, shards: ShardSet, run: Path, processes: Processes) -> None:
        if processes.distributed and not cfg.run.fsdp:
            raise ConfigError("run.fsdp: several processes train only with FSDP here")
        self.cfg = cfg
        self.run = run
        self.processes = processes
        model, self.processor = build_model(cfg.model, cfg.run.seed)
        if cfg.model.lora is not None:
            model = add_lora(model, cfg.model.lora)
        set_trainable(model, cfg.model.trainable, lora=cfg.model.lora is not None)
        if cfg.model.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.llava_config = model.config
        self.flops = FlopsModel.of(model)
        self.peak = peak_flops(processes.device, cfg.run.peak_flops)
        self.dtype = _precision(cfg.run.precision, processes.device)
        model.to(processes.device)
        self.sharded = processes.distributed
        if self.sharded:
            shard(model, self.dtype)
        self.model = model
        trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trained, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
        )
        self.use_shards(shards)
        warmup = math.ceil(cfg.optim.warmup_ratio * self.total_steps)
        self.scheduler = get_constant_schedule_with_warmup(self.optimizer, num_warmup_steps=warmup)
        self.state: dict[str, Any] = {"step": 0, "micro_batches": 0, "positions": {}, "history": [], "skipped": {},
                                      "dropped_images": {}, "shards": pinned(self.shards)}  # fmt: skip

    def use_shards(self, shards: ShardSet) -> None:
        self.shards = shards
        self.units = list_units(shards)
        self.samples = sum(unit.rows for unit in self.units)
        per_step = self.cfg.run.batch_size * self.cfg.run.grad_accum * self.processes.world_size
        self.total_steps = self.cfg.run.max_steps or max(1, self.samples * self.cfg.run.epochs // per_step)

    def stream(self) -> ShardStream:
        data = self.cfg.data
        workers = max(1, data.num_workers)
        stream = ShardStream(
            self.units, data, self.processor, self.cfg.model.model_max_length,
            rank=self.processes.rank, world_size=self.processes.world_size, epochs=self.cfg.run.epochs,
            seed=self.cfg.run.seed, start={int(k): v for k, v in self.state["positions"].items()},
            rotation=self.state["micro_batches"] % workers,
        )  # fmt: skip
        if self.state.get("consumers", stream.consumers) != stream.consumers:
            raise ConfigError(
                f"the checkpoint was written by {self.state['consumers']} data consumers (ranks x workers), this run "
                f"has {stream.consumers}: resume with the same number of processes and data.num_workers"
            )
        self.state["consumers"] = stream.consumers
        return stream

    def resume(self) -> Path | None:
        latest = checkpoint.latest(self.run)
        if latest is not None:
            self.state = checkpoint.load(latest, self.model, self.optimizer, self.scheduler, self.processes)
            if self.state["shards"]["set"] != self.shards.set_id:  # a newer set was published since: keep the run's
                self.use_shards(from_pinned(self.state["shards"]))
            logger.info("resumed from %s (step %d)", latest, self.state["step"])
        return latest

    def forget_samples_after(self, step: int) -> None:
        """Steps an interrupted run logged after its last checkpoint are trained again: drop their lines."""
        log = self.run / SAMPLES_LOG
        if log.exists():
            lines = [line for line in log.read_text().splitlines() if _logged_step(line) <= step]
            write_file(self.run, SAMPLES_LOG, "".join(line + "\n" for line in lines).encode())

    def _autocast(self):
        if self.dtype is None or self.sharded:  # FSDP casts by its mixed-precision policy
            return contextlib.nullcontext()
        return torch.autocast(self.processes.device.type, dtype=self.dtype)

    def step(self, micro: list[Batch]) -> StepResult:
        """One optimizer step over `micro`: the loss is the mean over every target token of the global batch (all
        micro-batches of all ranks), so accumulation and the number of ranks do not change it."""
        targets = all_sum([sum(batch.targets for batch in micro)], self.processes)[0]
        per_rank_share = max(targets, 1) / self.processes.world_size  # FSDP averages gradients over ranks
        loss_sum = 0.0
        self.model.train()
        for index, batch in enumerate(micro):
            if self.sharded:
                self.model.set_requires_gradient_sync(index == len(micro) - 1)
            with self._autocast():
                output = self.model(**batch.model_inputs(self.processes.device), num_items_in_batch=per_rank_share)
            output.loss.backward()
            loss_sum += output.loss.item()
        grad_norm = None
        if self.cfg.optim.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.cfg.optim.max_grad_norm
            )
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, tokens, images, flops = all_sum(
            [loss_sum, sum(b.tokens for b in micro), sum(b.images for b in micro),
             sum(self.flops.step(b.lengths, b.images) for b in micro)],
            self.processes,
        )  # fmt: skip
        return StepResult(loss / self.processes.world_size, grad_norm, int(tokens), int(images), flops)

    def record(self, micro: list[Batch], result: StepResult, seconds: float) -> dict[str, Any]:
        """The step's log entry; the samples each rank trained on go to `samples.jsonl` (a run's data order, to audit
        or compare, kept out of the checkpointed state, which it would outgrow)."""
        state = self.state
        sample_ids = gather_objects([i for batch in micro for i in batch.sample_ids], self.processes)
        state["step"] += 1
        state["micro_batches"] += len(micro)
        for batch in micro:
            state["positions"].update({str(consumer): position for consumer, position in batch.positions.items()})
            for key, counts in (("skipped", batch.skipped), ("dropped_images", batch.dropped_images)):
                state[key] = dict(Counter(state[key]) + counts)
        mfu = None
        if self.peak is not None:
            mfu = result.flops / (seconds * self.processes.world_size * self.peak)
        entry = {
            "step": state["step"],
            "loss": result.loss,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": result.grad_norm,
            "tokens": result.tokens,
            "images": result.images,
            "seconds": seconds,
            "tokens_per_s": result.tokens / seconds,
            "images_per_s": result.images / seconds,
            "mfu": mfu,
        }
        state["history"].append(entry)
        if self.processes.main:
            with (self.run / SAMPLES_LOG).open("a") as log:
                log.write(json.dumps({"step": state["step"], "sample_ids": sample_ids}) + "\n")
        return entry

    def shared_state(self) -> dict[str, Any]:
        """The state with every rank's data positions and counts (each rank knows only its own consumers)."""
        parts = gather_objects(
            {key: self.state[key] for key in ("positions", "skipped", "dropped_images")}, self.processes
        )
        merged = dict(self.state)
        merged["positions"] = {k: v for part in parts for k, v in part["positions"].items()}
        for key in ("skipped", "dropped_images"):
            merged[key] = dict(sum((Counter(part[key]) for part in parts), Counter()))
        return merged

    def save_checkpoint(self) -> Path:
        return checkpoint.save(
            self.run, self.state["step"], self.model, self.optimizer, self.scheduler, self.shared_state(),
            self.processes, self.cfg.run.keep_checkpoints,
        )  # fmt: skip

    def metrics(self, wall_s: float, resumed_from: Path | None) -> dict[str, Any]:
        state = self.shared_state()
        history = state["history"]
        tokens = sum(entry["tokens"] for entry in history)
        images = sum(entry["images"] for entry in history)
        seconds = sum(entry["seconds"] for entry in history)
        mfus = [entry["mfu"] for entry in history if entry["mfu"] is not None]
        return {
            "steps": len(history),
            "planned_steps": self.total_steps,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": history[-1]["loss"] if history else None,
            "tokens": tokens,
            "images": images,
            "tokens_per_s": tokens / seconds if seconds else None,
            "images_per_s": images / seconds if seconds else None,
            "mfu": sum(mfus) / len(mfus) if mfus else None,
            "mfu_note": None if mfus else "unmeasured: no GPU peak known for this device",
            "world_size": self.processes.world_size,
            "device": str(self.processes.device),
            "precision": str(self.dtype or torch.float32),
            "samples_in_shards": self.samples,
            "skipped_samples": state["skipped"],
            "dropped_images": state["dropped_images"],
            "resumed_from": str(resumed_from) if resumed_from else None,
            "wall_s_this_process": wall_s,
            "history": history,
        }


def _fit(trainer: Trainer) -> None:
    cfg, processes = trainer.cfg, trainer.processes
    batches = iter(loader(trainer.stream(), cfg.run.batch_size, trainer.processor.tokenizer.pad_token_id))
    progress = tqdm(total=trainer.total_steps, initial=trainer.state["step"], disable=not processes.main,
                    desc="train", unit="step", dynamic_ncols=True)  # fmt: skip
    saved_at = trainer.state["step"]
    while trainer.state["step"] < trainer.total_steps:
        started = time.perf_counter()
        micro = _take(batches, cfg.run.grad_accum)
        if not all_true(len(micro) == cfg.run.grad_accum, processes):
            logger.info("data ran out after %d steps: the tail is dropped so every rank stops together",
                        trainer.state["step"])  # fmt: skip
            break
        result = trainer.step(micro)
        entry = trainer.record(micro, result, time.perf_counter() - started)
        progress.update(1)
        progress.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
        step = entry["step"]
        if processes.main and (step % cfg.run.log_every == 0 or step == 1):
            mfu = "" if entry["mfu"] is None else f" mfu {entry['mfu']:.1%}"
            logger.info("step %d loss %.4f lr %.2e %.0f tokens/s %.1f images/s%s", step, entry["loss"], entry["lr"],
                        entry["tokens_per_s"], entry["images_per_s"], mfu)  # fmt: skip
        if step % cfg.run.checkpoint_every == 0:
            trainer.save_checkpoint()
            saved_at = step
    progress.close()
    if trainer.state["step"] > saved_at:
        trainer.save_checkpoint()


def train(
    config: TrainConfig | str | Path, shards: ShardSet | str | Path, out: str | Path, resume: bool = False
) -> dict[str, Any]:
    """Train on a shard set (one already opened, or the set current in a folder or fsspec URL holding index.json),
    or fine-tune on an instruct export (a folder holding instruct.parquet: train/sft.py), into the run folder `out`;
    with `resume`, continue from its latest complete checkpoint (on the set that checkpoint pinned). Returns the
    run's metrics."""
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config)
    processes = start()
    try:
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        run = Path(out)
        if not resume and checkpoint.latest(run) is not None:
            raise FileExistsError(f"{run} holds checkpoints: resume it (--resume) or train into a new folder")
        run.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        from train.sft import open_training_data, trainer_class  # an instruct export trains by SFT (train/sft.py)

        data = open_training_data(shards)
        trainer = trainer_class(data)(cfg, data, run, processes)
        resumed_from = trainer.resume() if resume else None
        if processes.main:
            trainer.forget_samples_after(trainer.state["step"])
            write_file(run, "config.yaml", dump_train_config(cfg).encode())
        _fit(trainer)
        metrics = trainer.metrics(time.perf_counter() - began, resumed_from)
        if cfg.run.save_model:
            export(trainer.model, trainer.llava_config, trainer.processor, cfg.model.lora, run / MODEL_DIR, processes)
        if processes.main:
            write_metrics(run, metrics)
            if metrics["history"]:
                plot_loss(run, metrics["history"], f"{metrics['steps']} steps, world size {processes.world_size}")
        return metrics
    finally:
        stop(processes)
