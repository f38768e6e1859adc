"""A finished run's model, opened one way for evaluation, chat, the review and export.

:func:`open_finished` reads the run's record, refuses a run without a saved adapter (one message, what to
do), and says where everything is: the settings the run trained with, the base model on this machine, the
adapter, the tokenizer training saved beside it, and where and in what precision the model answers here
(the planner's serving decision). Loading the weights stays with each caller (core.models.loading), in the
device and precision given here: nothing heavy is imported by this module.

May import: core.models (resolve), core.planning (serving decisions), core.bookkeeping.runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import runs


class NoAdapter(runs.RunError):
    """The run saved no adapter (it is still training, failed before its first save, or lost it)."""


@dataclass
class Finished:
    """Where a finished run's parts are; nothing is loaded."""

    run_dir: Path
    record: runs.Record
    cfg: Any
    """The RunConfig the run trained with."""
    base_path: Path
    """The base model's directory on this machine."""
    adapter_dir: Path

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer training saved beside the adapter (the chat template the model learnt), else the base's."""
        return self.adapter_dir if (self.adapter_dir / "tokenizer_config.json").is_file() else self.base_path

    def placement(self) -> tuple[str, str]:
        """(device, dtype) the model answers in on this machine: the planner's serving decision for the
        hardware found here (core.planning.planner.choose_serving)."""
        from tunewiz.core.planning import hardware, planner

        device, dtype = planner.choose_serving(hardware.detect(self.run_dir), self.cfg.model.dtype)
        return device.value, dtype.value


def no_adapter_message(run_dir: Path, status: str) -> str:
    """What a run without a saved adapter is, and what to do about it."""
    name = run_dir.name
    return (
        f"{name} has no saved adapter (status {status}), so there is no fine-tuned model to chat with, evaluate or "
        f"export: wait for it to finish (`tunewiz attach {name}`), or resume it (`tunewiz resume {name}`)"
    )


def open_finished(run_dir: str | Path) -> Finished:
    """The run's parts; NoAdapter when it saved none, runs.RunError when its record is damaged, and the
    ConfigError / ModelError of a record whose settings or model do not hold here."""
    from tunewiz.core.models import resolve as models

    run_dir = Path(run_dir)
    rec = runs.read_record(run_dir)
    if not runs.has_adapter(run_dir):
        raise NoAdapter(no_adapter_message(run_dir, rec.run.status or "?"))
    cfg = rec.request(strict=True, source=str(run_dir / runs.RECORD))
    resolved = models.resolve(cfg.model.id, runs.home_of(run_dir))
    return Finished(run_dir, rec, cfg, Path(resolved.path), run_dir / runs.ADAPTER)
