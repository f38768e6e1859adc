"""Runs started, queued, followed and stopped: `tunewiz train` (with --dry-run and --queue), `queue`,
`sweep`, `demo`, `stop`, `resume` and `attach`, and the two steps they share: submitting a run (launch)
and printing its events until it ends (follow_run).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunewiz.core.bookkeeping import repair, runs
from tunewiz.core.bookkeeping.events import describe
from tunewiz.core.config import RunConfig
from tunewiz.core.models.resolve import DEFAULT_MODEL
from tunewiz.tui.commands.request import UserError, build_config, sweep_request
from tunewiz.tui.commands.screens import run_app
from tunewiz.tui.commands.shared import data_shape_of, print_record_summary, sample_data, warn
from tunewiz.tui.record_text import hang_all


def launch(cfg: RunConfig, home_dir: Path) -> Path:
    """Submit the run: the remote-code warning first (checking loads the model's tokenizer), then
    every check (launcher.check) and its warnings, then the trainer starts."""
    from tunewiz.core.training import launcher

    remote = launcher.remote_code_warning(cfg)
    if remote:
        warn(remote)
    return launcher.submit(cfg, home_dir, warn=warn)


def follow_run(run_dir: Path, started_here: bool = False) -> int:
    """Print the run's events until it ends, then its summary. `started_here`: this command started
    the run, so a trainer that died is recorded crashed and its notify program told (runs.reconcile);
    a run only watched (attach) is read, never written."""
    from tunewiz.core.training import launcher

    doc, _ = runs.record_problem(run_dir / runs.RECORD)
    watching = doc is not None and doc.run.status in runs.ACTIVE
    try:
        for ev in launcher.follow(run_dir):
            line = describe(ev)
            if line:
                print(line, flush=True)
    except KeyboardInterrupt:
        print(
            f"\nDetached. Training goes on in the background.\n"
            f"  follow it:  tunewiz attach {run_dir.name}\n  stop it:    tunewiz stop {run_dir.name}"
        )
        return 0
    doc = runs.reconcile(run_dir) if started_here else runs.observe(run_dir)
    if watching and sys.stdout.isatty():  # seen ending on a terminal: bell and desktop notification
        from tunewiz.core.bookkeeping import notify

        sys.stdout.write(notify.terminal_alert(notify.title(doc), notify.summary(doc)))
    print()
    print_record_summary(doc)
    return 0 if doc.run.status == "completed" else 1


def cmd_train(ns) -> int:
    home_dir = runs.home(ns.home)
    cfg = build_config(ns)
    if ns.dry_run:
        return cmd_dry_run(cfg, home_dir)
    if ns.queue:
        from tunewiz.core.training import queue

        queued = queue.submit(cfg, home_dir, warn=warn)
        print(queued_line(queued))
        print(f"  record: {queued.run_dir / runs.RECORD}\n  queue:  `tunewiz queue` lists, moves and cancels")
        return follow_run(queued.run_dir) if ns.follow else 0
    run_dir = launch(cfg, home_dir)
    print(f"started run {run_dir.name}")
    print(f"  record: {run_dir / runs.RECORD}\n  log:    {run_dir / runs.LOG}")
    if not ns.follow:
        print(f"It trains in the background. Follow it with: tunewiz attach {run_dir.name}")
        return 0
    return follow_run(run_dir)


def cmd_dry_run(cfg: RunConfig, home_dir: Path) -> int:
    """`tunewiz train ... --dry-run`: every check a real start runs (the same errors, the same warnings),
    then the plan this machine would run the request with; nothing starts."""
    from tunewiz.core.planning import planner
    from tunewiz.core.training import launcher

    remote = launcher.remote_code_warning(cfg)
    if remote:
        warn(remote)
    checked = launcher.check(cfg, home_dir)
    for line in checked.warnings:
        warn(line)
    shape = checked.report.data_shape() if checked.tokenized else data_shape_of(cfg, home_dir)
    p = planner.plan(cfg, checked.hw, shape=shape, busy=checked.busy)
    head = f"dry run: {cfg.model.id} ({cfg.model.method}) on {cfg.data.path}, {cfg.preset} preset; nothing started"
    print(hang_all([head, *p.lines(), f"-> {p.memory_line()}"]))
    return 1 if p.problems else 0


def queued_line(q) -> str:
    """What `tunewiz train --queue` says about the run it queued (a core.queue.Queued)."""
    head = f"queued run {q.run_dir.name} as #{q.place}"
    if not q.waits_for:
        return f"{head}\n  nothing else uses its device: it starts now"
    return f"{head}\n  it starts after {q.after()}"


def cmd_queue(ns) -> int:
    """`tunewiz queue [list | move RUN N | cancel RUN]`: the runs waiting their turn on this machine."""
    from tunewiz.core.training import launcher, queue

    home_dir = runs.home(ns.home)
    action = getattr(ns, "queue_command", None) or "list"
    if action == "move":
        run_dir = runs.find_run(home_dir, ns.run)
        place = queue.move(home_dir, run_dir, ns.place)
        print(f"{run_dir.name} is now #{place} in the queue")
        return 0
    if action == "cancel":
        run_dir = runs.find_run(home_dir, ns.run)
        queue.cancel(home_dir, run_dir)
        print(f"cancelled {run_dir.name}\n  it left the queue; its directory stays (`tunewiz runs` lists it)")
        return 0
    items = runs.list_runs(home_dir)
    active = [r for r in items if r.status in runs.ACTIVE]
    waiting = sorted((r for r in items if r.status == runs.WAITING), key=lambda r: r.queue_place)
    restarted = queue.ensure_runner(home_dir) if queue.waiting(home_dir) else None
    for r in active:
        where = ", ".join(launcher.device_name(d) for d in sorted(launcher.devices(r.record)))
        print(f"now   {r.id[:44]:<44} {'starting' if r.status == 'queued' else r.status:<8} {where}")
    if not waiting:
        print("nothing waits in the queue; `tunewiz train ... --queue` adds a run")
        return 0
    print(f"{'place':<6}{'run':<44} {'preset':<13}{'device':<8}")
    for r in waiting:
        where = ", ".join(launcher.device_name(d) for d in sorted(launcher.devices(r.record)))
        print(f"#{r.queue_place:<5}{r.id[:44]:<44} {r.preset[:12]:<13}{where:<8}")
    pid = queue.runner_pid(home_dir)
    root = runs.runs_root(home_dir)
    if restarted:
        print(f"no queue runner was alive: started one (pid {restarted})")
    elif pid:
        print(f"queue runner: pid {pid}")
    print(f"  its log: {root / queue.LOG}")
    print("They start in this order, one run per device at a time. To change the order:")
    print("`tunewiz queue move RUN N`; to take a run out: `tunewiz queue cancel RUN`.")
    return 0


def cmd_sweep(ns) -> int:
    """`tunewiz sweep --data FILE`: the three presets queued on the same data and held-out split;
    `tunewiz sweep show [ID|last]`: their ranking."""
    from tunewiz.core.training import sweep
    from tunewiz.tui.record_text import sweep_lines

    home_dir = runs.home(ns.home)
    if getattr(ns, "sweep_command", None) == "show":
        print("\n".join(sweep_lines(sweep.load(home_dir, sweep.find(home_dir, ns.sweep)))))
        return 0
    if not ns.data:
        raise UserError("give the data to try the presets on: `tunewiz sweep --data FILE` (or `tunewiz sweep show`)")
    base, overrides = sweep_request(ns)
    sweep_id, queued = sweep.submit(base, home_dir, overrides, warn=warn)
    print(f"sweep {sweep_id}: the three presets on {Path(base.data.path).name}")
    for q in queued:
        print(f"  #{q.place:<3}{q.run_dir.name}" + ("" if q.waits_for else "  (starts now)"))
    print("They train one after another, on the same held-out rows. The ranking, as they finish:")
    print(f"  tunewiz sweep show {sweep_id}   (or s on one of them in `tunewiz history`)")
    return 0


def cmd_demo(ns) -> int:
    from tunewiz.core.planning import hardware, presets

    home_dir = runs.home(ns.home)
    hw = hardware.detect(home_dir)
    cfg = presets.build_config("balanced")
    cfg.name = "demo-support-tickets"
    cfg.model.id = DEFAULT_MODEL
    cfg.data.path = str(sample_data())
    if hw.device == "cpu" and ns.epochs is None:
        # The full preset takes ~15 minutes on 2 CPU cores; one epoch shows the effect in ~5.
        cfg.training.num_epochs = 1.0
        print("No GPU: the demo trains one epoch of the balanced preset so it finishes in minutes.")
    if ns.epochs is not None:
        cfg.training.num_epochs = ns.epochs
    cfg.validate()
    print(f"Fine-tuning {cfg.model.id} on {cfg.data.path} (support tickets -> JSON labels)")
    run_dir = launch(cfg, home_dir)
    print(f"started run {run_dir.name} (detached: closing this terminal does not stop it)")
    return follow_run(run_dir, started_here=True)


def cmd_stop(ns) -> int:
    from tunewiz.core.training import launcher

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    if runs.read_record(run_dir).run.status == runs.WAITING:
        raise UserError(f"{run_dir.name} is waiting in the queue: `tunewiz queue cancel {run_dir.name}` takes it out")
    if launcher.stop(run_dir, now=ns.now):
        if ns.now:
            print(
                f"stopped {run_dir.name} now, without a last checkpoint: `tunewiz show {run_dir.name}` says what "
                "it had saved (a run stopped during its comparison keeps its adapter and reads completed)"
            )
        else:
            print(
                f"asked {run_dir.name} to stop; it saves a checkpoint and the adapter first "
                "(during the comparison it ends it at the next batch, keeping the adapter)"
            )
        return 0
    print(f"{run_dir.name} is not running ({runs.observe(run_dir).run.status})")
    return 1


def cmd_resume(ns) -> int:
    from tunewiz.core.training import launcher

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    doc = runs.reconcile(run_dir)
    if not runs.here(doc):
        raise UserError(
            f"{run_dir.name} was made on {doc.run.extra.get('host', doc.run.host)}, not on this machine: resume it "
            "there, or "
            f"start it here afresh with `tunewiz train --config {run_dir / runs.RECORD}`"
        )
    status = doc.run.status
    if status not in runs.RESUMABLE:
        raise UserError(f"{run_dir.name} is {status}; only a stopped, crashed or failed run can be resumed")
    missing = repair.unnamed(doc)
    if missing:  # a repaired record may not know them: the trainer would fail on its first line
        raise UserError(
            f"{run_dir.name} cannot be resumed: its record does not say {' or '.join(missing)} (a repaired "
            f"record may not know them). Add {' and '.join(missing)} to {run_dir / runs.RECORD} by hand (the "
            f"model and the data file the run trained on), then `tunewiz resume {run_dir.name}` again"
        )
    data_path = Path(doc.data.path or "").expanduser()
    if data_path.is_absolute() and not data_path.exists():  # records keep absolute paths
        raise UserError(
            f"{run_dir.name} cannot be resumed: its data {data_path} is gone. Put the file back there, or set "
            f"[data] path in {run_dir / runs.RECORD} to where it is now, then `tunewiz resume {run_dir.name}` again"
        )
    from tunewiz.core.bookkeeping import checkpoints

    ckpt, skipped = checkpoints.newest_complete(run_dir / runs.CHECKPOINTS)
    for s in skipped:
        print(f"skipping {s.path.name}: {s.why}")
    start = ckpt.name if ckpt else "the start (no complete checkpoint was saved)"
    print(f"resuming {run_dir.name} from {start}")
    launcher.start(run_dir, resume=True)
    return follow_run(run_dir, started_here=True) if ns.follow else 0


def cmd_attach(ns) -> int:
    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    if ns.plain or not sys.stdout.isatty():
        return follow_run(run_dir)
    return run_app(ns, start="attach", run=run_dir)
