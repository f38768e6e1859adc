"""Data-parallel training over several processes, started by ``accelerate launch``.

With ``training.processes = N > 1`` the launcher starts the trainer as
``python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m tunewiz.core.training.trainer RUN_DIR``:
accelerate's launcher (torch's elastic agent underneath) starts N copies of the trainer, each with
RANK / WORLD_SIZE / MASTER_ADDR in its environment. transformers' Trainer then wraps the model in
DistributedDataParallel: NCCL across GPUs, gloo on CPU (``--multi_gpu`` only selects the
multi-process launcher; without CUDA the processes join a gloo group). Each process sees 1/N of
every batch, so the effective batch is per_device_batch_size x gradient_accumulation_steps x N.

Only rank 0 ("primary") writes run.toml and events.jsonl, holds the run's trainer lock, saves the
adapter and evaluates; the other ranks train and log to train.log with a ``[rank R]`` prefix.
A stop request (SIGTERM to rank 0, whose pid the record holds) is shared with every rank at the
end of each step, so all ranks stop after the same step instead of one waiting forever in a
collective. Nothing here distributes anything itself: accelerate and torch.distributed do.

With ``training.fsdp = true`` (GPUs only: accelerate enables FSDP for multi-GPU runs, not for
CPU process groups) the processes shard the model instead of each holding a copy: accelerate's
FSDP 2 plugin wraps each transformer block, and transformers' Trainer applies it (PEFT-aware).
Every rank then takes part in saving the adapter (its shards are gathered to rank 0), and rank 0
evaluates on a freshly loaded base + adapter, since the sharded model needs all ranks to run.
"""

from __future__ import annotations

import os
import socket
import sys


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on this machine (which GPU it trains on)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_primary() -> bool:
    return rank() == 0


def free_port() -> int:
    """A free TCP port for the process group's rendezvous (two runs at once must not share 29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FSDP_FLAGS = [
    "--fsdp_version", "2",
    # Wrap each transformer block (the model's own _no_split_modules, e.g. LlamaDecoderLayer): one
    # block's weights are gathered at a time.
    "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
    "--fsdp_reshard_after_forward", "true",
    # The adapter is saved whole by rank 0 (a few MB), so `adapter/` is a normal PEFT adapter.
    "--fsdp_state_dict_type", "FULL_STATE_DICT",
    "--fsdp_cpu_ram_efficient_loading", "false",
]  # fmt: skip


def launch_command(processes: int, trainer_args: list[str], fsdp: bool = False) -> list[str]:
    """The command line that starts `processes` data-parallel trainers through accelerate
    (DDP; with `fsdp`, FSDP 2 sharding each transformer block over the processes).

    >>> launch_command(2, ["/runs/r1"])[:6]  # doctest: +ELLIPSIS
    ['...', '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2']
    >>> launch_command(2, ["/runs/r1"], fsdp=True)[3:6]
    ['--use_fsdp', '--num_processes', '2']
    """
    mode = ["--use_fsdp"] if fsdp else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes)]
    if fsdp:
        cmd += FSDP_FLAGS
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]
    # The trainer sets its own thread count (physical cores / processes on CPU); this only keeps
    # accelerate from guessing one and warning about it.
    cmd += ["--num_cpu_threads_per_process", "1"]
    return cmd + ["-m", "tunewiz.core.training.trainer", *trainer_args]


def any_ranks(*flags: bool) -> list[bool]:
    """Each flag, true on every rank when it is true on any: one all_reduce for them all (a no-op
    outside a process group).

    >>> any_ranks(True, False)
    [True, False]
    """
    if world_size() <= 1:
        return list(flags)
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return list(flags)
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x) for x in t.tolist()]


def from_primary(obj):
    """Rank 0's `obj` on every rank (a no-op in a single process).

    The ranks plan from rank 0's view of the machine, so every rank plans the same batch split and
    checkpointing: two ranks that each read free memory could plan differently near the budget's edge,
    and a rank that checkpoints or accumulates differently from the others hangs the process group.
    """
    if world_size() <= 1:
        return obj
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # joins the process group `accelerate launch` set up (the Trainer reuses it)
    box = [obj if is_primary() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish() -> None:
    """Leave the process group cleanly (avoids a warning and a slow exit on every rank)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - tearing down must never turn a finished run into a failure
        pass


class NullEvents:
    """The events writer of a non-primary rank: rank 0 alone writes events.jsonl."""

    def emit(self, event: str, **fields):
        return {"event": event, **fields}

    def close(self) -> None:
        pass
