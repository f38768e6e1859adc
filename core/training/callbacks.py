"""What tunewiz adds to trl's SFTTrainer at every step: counting, events, checks, whole checkpoints.

- :class:`Counter`: training tokens and time, counted where the step runs.
- :class:`EventsCallback`: writes the step, eval and checkpoint events (events.jsonl, train.log), stops
  at a step's end when asked (:class:`~tunewiz.core.training.stopping.StopFlag`) or when the run was
  removed, and fails the run with :class:`NonFinite` when the adapter's weights stop being numbers.
- :class:`StepsAndCheckpoints`: the two Trainer methods tunewiz extends (mixed in before SFTTrainer by
  :func:`tunewiz.core.training.trainer.build`): the step counts its batch, and a checkpoint is whole
  (room checked before, marked complete after, old ones rotated only then) or does not count.

No heavy library is imported here (tests/test_import_hygiene.py): the callback speaks transformers'
callback protocol by name (:class:`Callback`), and the mixin meets SFTTrainer only in ``build``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import checkpoints
from tunewiz.core.bookkeeping.events import EventWriter
from tunewiz.core.training import distributed
from tunewiz.core.training.process_memory import memory_mb, release_freed_memory
from tunewiz.core.training.stopping import RunRemoved, RunWatch, StopFlag

log = logging.getLogger("tunewiz.trainer")


@dataclass
class Counter:
    """Training tokens and time, counted in the training process itself (so loader workers do not
    hide them) and only for training batches (held-out batches are not training)."""

    tokens: int = 0
    padded: int = 0
    seconds: float = 0.0
    """Time inside training steps (forward, backward, optimizer): no evaluation, no checkpoint saving."""

    def count(self, inputs: dict) -> None:
        ids = inputs.get("input_ids")
        if ids is None:
            return
        mask = inputs.get("attention_mask")
        self.padded += int(ids.numel())
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())  # padding-free: no padding

    @property
    def padding_fraction(self) -> float:
        return round(1 - self.tokens / max(self.padded, 1), 4)


class NonFinite(RuntimeError):
    """The adapter's weights became NaN or Inf: the run stops here (an adapter of NaNs is no model)."""

    def __init__(self, step: int, where: str, figures: str = "") -> None:
        self.step = step
        super().__init__(
            f"the adapter's weights became NaN or Inf at step {step} ({where}{'; ' + figures if figures else ''}): "
            "a setting such as learning_rate, weight_decay or max_grad_norm is too large or not a number. "
            "Nothing after the last good checkpoint is kept; start again with a lower learning_rate"
        )


def non_finite_weights(model) -> str:
    """The first trainable tensor of `model` holding a NaN or Inf, by name ('' when all are finite): one
    isfinite pass over the adapter's weights a step (LoRA's few million values, not the model's)."""
    if model is None:
        return ""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not bool(torch.isfinite(param.detach()).all()):
            return name
    return ""


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class Callback:
    """transformers' TrainerCallback protocol without importing transformers: the Trainer calls every
    event (``on_step_end``, ``on_log``, ...) by name on every callback; an event a subclass does not
    define does nothing, as in TrainerCallback."""

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return _nothing
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class EventsCallback(Callback):
    """The run's step, eval and checkpoint events, and the checks made at every step's end.

    `start_step`: the step resumed from (the time left is estimated from the steps this process ran);
    `on_cpu`: hand freed heap blocks back between steps (process_memory.release_freed_memory); `watch`:
    the run directory to watch (None: not watched, as in the probe).
    """

    def __init__(
        self,
        events: EventWriter,
        stop: StopFlag,
        counter: Counter,
        start_step: int,
        on_cpu: bool = False,
        watch: RunWatch | None = None,
    ) -> None:
        self.events = events
        self.stop = stop
        self.counter = counter
        self.start_step = start_step
        self.on_cpu = on_cpu
        self.watch = watch
        self.t_step = 0.0

    def on_train_begin(self, args, state, control, **kw):
        self.events.emit(
            "train_begin", max_steps=state.max_steps, start_step=state.global_step, epochs=args.num_train_epochs
        )

    def on_step_begin(self, args, state, control, **kw):
        self.t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.counter.seconds += time.perf_counter() - self.t_step
        bad = non_finite_weights(kw.get("model"))  # noqa: record (the callback's keyword, not a table)
        if bad:
            last = next((h for h in reversed(state.log_history) if "loss" in h), {})
            seen = ", ".join(f"{k.replace('_', ' ')} {last[k]:.4g}" for k in ("loss", "grad_norm") if k in last)
            raise NonFinite(state.global_step, bad, f"last logged {seen}" if seen else "")
        if self.on_cpu:
            release_freed_memory()
        # one all_reduce a step for both: every rank stops at the same step
        watch = self.watch
        gone, stopping = distributed.any_ranks(watch is not None and watch.gone(), self.stop.requested)
        if gone:
            raise RunRemoved(f"{watch.run_dir} was removed while training: stopping, writing nothing")
        if stopping:
            self.stop.requested = True  # on ranks the signal did not reach too (the end-of-epoch checks)
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # a stop is prompt: no held-out pass on the way out

    def on_evaluate(self, args, state, control, **kw):
        if self.on_cpu:
            release_freed_memory()

    def on_epoch_end(self, args, state, control, **kw):
        if self.stop.requested:  # stopping ends the epoch early; its scheduled evaluation would delay the stop
            control.should_evaluate = False

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            self._step(state, logs)
        elif "eval_loss" in logs:
            self.events.emit(
                "eval", step=state.global_step, epoch=round(state.epoch or 0.0, 3), eval_loss=logs["eval_loss"]
            )
            log.info("eval at step %d: eval_loss %.4f", state.global_step, logs["eval_loss"])

    def _step(self, state, logs: dict) -> None:
        counter, done = self.counter, state.global_step - self.start_step
        tps = counter.tokens / counter.seconds if counter.seconds else 0.0
        left = state.max_steps - state.global_step
        eta = counter.seconds / done * left if done > 0 else None
        ev = self.events.emit(
            "step",
            step=state.global_step,
            max_steps=state.max_steps,
            epoch=round(state.epoch or 0.0, 3),
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            tokens_per_s=round(tps, 1),
            memory_mb=memory_mb(),
            eta_s=round(eta, 1) if eta is not None else None,
        )
        log.info(
            "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.0f tok/s  eta %s",
            ev["step"],
            ev["max_steps"],
            ev["epoch"],
            ev["loss"] or 0.0,
            ev["learning_rate"] or 0.0,
            tps,
            f"{eta:.0f}s" if eta is not None else "?",
        )

    def on_save(self, args, state, control, **kw):
        self.events.emit(
            "checkpoint",
            step=state.global_step,
            path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"),
        )


class StepsAndCheckpoints:
    """Mixed in before trl's SFTTrainer (trainer.build): each training step counts its batch into
    `counter` (here, not in the collator: loader workers collate in other processes), and checkpoints
    under `checkpoints_dir` are whole or do not count. Before each save the free space is checked
    against the checkpoint's size (`first_checkpoint_bytes` before there is one to measure), after it
    the checkpoint is marked complete, and only then are old ones rotated out beyond `keep` (the
    Trainer's own rotation is off: it would count a torn checkpoint and delete a whole one). A removed
    run (`watch`) is not re-created by a save."""

    def __init__(
        self,
        *args: Any,
        counter: Counter,
        checkpoints_dir: Path,
        keep: int,
        first_checkpoint_bytes: int,
        watch: RunWatch | None = None,
        **kwargs: Any,
    ) -> None:
        self.counter = counter
        self.checkpoints_dir = checkpoints_dir
        self.keep = keep
        self.first_checkpoint_bytes = first_checkpoint_bytes
        self.watch = watch
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, *args, **kwargs):
        self.counter.count(inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        if self.watch is not None:
            self.watch.check()
        step = self.state.global_step
        if distributed.is_primary():
            checkpoints.check_room(self.checkpoints_dir, step, self.first_checkpoint_bytes)
        super()._save_checkpoint(model, trial)
        if self.watch is not None:
            self.watch.check()  # removed during the save: what the save wrote is taken back
        if distributed.is_primary():
            ckpt = self.checkpoints_dir / f"{checkpoints.PREFIX}{step}"
            checkpoints.mark_complete(ckpt, step)
            for gone in checkpoints.rotate(self.checkpoints_dir, self.keep):
                log.info("removed %s (save_total_limit = %d)", gone.name, self.keep)
