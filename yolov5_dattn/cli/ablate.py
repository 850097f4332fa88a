"""Does the attention help on your data? Train each --cfg and, automatically, the stock YOLOv5 model of the
same scale and task, with identical hyperparameters, seed, data order and flags; then one table of mAP
against cost (params, full GFLOPs, latency, train time), mean and spread over the seeds.

    yolov5-dattn ablate --data demo_shapes.yaml --cfg yolov5n_c3_dattn.yaml yolov5n_c3_dattn_ls.yaml \\
        --epochs 12 --imgsz 160 --seeds 0 1 2 --transfer --hyp hyp.demo.yaml --optimizer AdamW --batch-size 16
    python scripts/ablate.py ...                    # the same, from a checkout
    yolov5-dattn ablate --resume                    # continue the latest unfinished ablation
    yolov5-dattn ablate --preset demo --data D --cfg yolov5n_c3_dattn.yaml   # a protocol measured to be stable

Every other flag goes to each training unchanged (YOLOv5's train.py flags: --hyp, --batch-size, --optimizer,
--device, --workers, ...). Each run is `yolov5-dattn train` in its own Python; the output lands in
runs/ablate/exp… (results.md, results.json, results.png; runs/, logs/). Re-running the same command
continues an unfinished ablation run by run; a run that fails is reported in the table.

The table pairs every model with stock seed by seed (the differences, their mean and sample std) and gives one
verdict line per model: "better", "worse" or "within noise" by a two-sided paired t-test at 95 % over the
seeds. Fewer than 3 seeds make the verdict weak (a warning says so): use --seeds 0 1 2 or more.
"""
import argparse
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from yolov5_dattn.analysis.ablation_presets import PRESETS, expand
from yolov5_dattn.errors import UserError, one_line


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of `ablate`; unknown flags are train flags (passed to every run)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --seed / --img are train.py's: never ablate's --seeds / --imgsz
    p.add_argument("--data", default=None, help="dataset YAML (a path or a shipped name such as demo_shapes.yaml)")
    p.add_argument("--cfg", nargs="+", default=None,
                   help="model YAML(s) to ablate, each a path or a shipped name (yolov5n_c3_dattn.yaml); the "
                        "same-scale stock YOLOv5 model of the same task is added as the baseline")
    p.add_argument("--baseline", default=None,
                   help="baseline model YAML for every --cfg (default: each one's same-scale yolov5 model, "
                        "e.g. yolov5n.yaml, segment/yolov5n-seg.yaml)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of every run")
    p.add_argument("--imgsz", type=int, default=None, help="train/val image size of every run (multiple of 32)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds; every config is trained once per seed (3 or more for a verdict that is not weak; "
                        "default 0, or the preset's)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a measured protocol (its --epochs, --imgsz, --seeds and train flags; flags given here win): "
                        + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values()))
    p.add_argument("--weights", default=None,
                   help="a checkpoint every run starts from (YOLOv5's --weights transfer); default: from scratch")
    p.add_argument("--transfer", action="store_true",
                   help="also train each --cfg from the same-seed baseline run's last.pt (rows 'cfg <- baseline': "
                        "their epoch-1 mAP shows what inserting the attention into a trained model costs)")
    p.add_argument("--transfer-epochs", type=int, default=None, help="epochs of the transfer runs (default --epochs)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of each training and torch threads of the latency measurement "
                        "(default: as the environment sets)")
    p.add_argument("--latency-runs", type=int, default=10, help="timed forwards per model for the latency column")
    p.add_argument("--project", default="runs/ablate", help="parent folder of the ablation folders")
    p.add_argument("--name", default="exp", help="ablation folder name (exp, exp2, ... as YOLOv5 numbers runs)")
    p.add_argument("--exist-ok", action="store_true", help="use project/name even if it exists (continuing it "
                                                           "when its plan is the same)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue an ablation (default: the latest under --project/--name) as it was planned")
    p.add_argument("--stream", action="store_true", help="show each training's output here too (always in logs/)")
    p.add_argument("--no-plot", action="store_true", help="do not write results.png")
    return p


def apply_preset(opt, train_args: List[str]) -> List[str]:
    """Fill `opt`'s --epochs, --imgsz and --seeds from `--preset` where not given; returns the train flags with
    the preset's added where not given (unchanged without --preset). UserError with --resume."""
    if not opt.preset:
        return list(train_args)
    if opt.resume:
        raise UserError("--resume continues an ablation as it was planned: drop --preset")
    opt.epochs, opt.imgsz, opt.seeds, train_args = expand(PRESETS[opt.preset], opt.epochs, opt.imgsz, opt.seeds,
                                                          train_args)
    return train_args


def _check_numbers(opt) -> None:
    for flag, value, low in (("--epochs", opt.epochs, 1), ("--imgsz", opt.imgsz, 32),
                             ("--transfer-epochs", opt.transfer_epochs, 1), ("--threads", opt.threads, 1),
                             ("--latency-runs", opt.latency_runs, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value} is too small: use {flag} {low} or more")
    if opt.imgsz is not None and opt.imgsz % 32:
        raise UserError(f"--imgsz {opt.imgsz} is not a multiple of 32: use --imgsz {(opt.imgsz + 31) // 32 * 32}")
    if opt.seeds is None:
        opt.seeds = [0]
    if any(s < 0 for s in opt.seeds) or len(set(opt.seeds)) != len(opt.seeds):
        raise UserError(f"--seeds {' '.join(map(str, opt.seeds))}: give distinct non-negative integers, e.g. --seeds 0 1")
    if opt.transfer_epochs is not None and not opt.transfer:
        raise UserError("--transfer-epochs without --transfer: add --transfer or drop --transfer-epochs")


def _check_train_args(train_args: Sequence[str]) -> None:
    """Refuse the flags the ablation sets itself (one line naming ours instead)."""
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in OWNED:
            ours = OWNED[flag]
            raise UserError(f"{flag}: the ablation sets it for every run" +
                            (f": use ablate's {ours}" if ours else ": not supported by ablate"))
        if flag.startswith("-") and not flag.startswith("--"):
            raise UserError(f"{arg}: not a flag of ablate or of train.py: give train flags in their --long form")


def _validate_runs(plan: dict, folder: Path) -> None:
    """Parse and check each distinct config's training exactly as `yolov5-dattn train` will (YOLOv5's parser,
    the wrapper's checks and preflight), before anything is trained: bad input fails here, not after hours."""
    from yolov5_dattn.analysis import ablation
    from yolov5_dattn.hosts.yolov5 import compat, data_yaml, entrypoint, run_checks
    from yolov5_dattn.hosts.yolov5.quiet import quiet_yolov5
    compat.apply_entrypoints()
    data_yaml.install()
    task = plan["task"]
    seen = set()
    for run in ablation.plan_runs(plan):
        if run.cfg in seen or run.start == "transfer":
            continue
        seen.add(run.cfg)
        argv = ablation.train_command(plan, run, folder)[3 + len(ablation.TRAIN_COMMAND[task]):]
        argv[argv.index("--project") + 1] = str(folder.parent)  # exists; the folder itself may not yet
        if "--hyp" not in argv:  # YOLOv5's default is relative to the directory this process imported it from
            argv += ["--hyp", str(_default_hyp())]
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()), quiet_yolov5():
                opt, ours = entrypoint.parse(task, argv, prog="train", echo=[])
                run_checks.check_run(opt, task, ours)
        except SystemExit:  # argparse: an unknown train flag or a bad value
            last = [line for line in captured.getvalue().splitlines() if line.strip()]
            reason = last[-1].split("error:", 1)[-1].strip() if last else "bad train flags"
            raise UserError(f"train flags: {reason} (ablate passes unknown flags to train.py: "
                            f"see yolov5-dattn train --help)") from None
        except AssertionError as e:
            raise UserError(f"--cfg {Path(run.cfg).name}: {one_line(e)}") from None
        except UserError as e:
            raise UserError(f"--cfg {Path(run.cfg).name}: {one_line(e)}") from None


def _default_hyp() -> Path:
    """The hyperparameter YAML train.py and segment/train.py use without --hyp (YOLOv5's default), as an absolute
    path: the runs get it from their own train.py; this process may have changed directory since importing it."""
    import yolov5
    return Path(yolov5.__file__).resolve().parent / "data" / "hyps" / "hyp.scratch-low.yaml"


def _nc_of(data: str) -> Optional[int]:
    import yaml
    try:
        d = yaml.safe_load(Path(data).read_text(encoding="utf-8"))
        names = d.get("names")
        return len(names) if names is not None else int(d["nc"])
    except Exception:  # the checks above already refused a bad data YAML; the YAML's nc is the fallback
        return None


def new_plan(opt, train_args: List[str]) -> dict:
    """The plan of a new ablation from the command line (UserError on bad input)."""
    from yolov5_dattn.analysis import ablation
    from yolov5_dattn.analysis.comparison import _read_yaml, is_segmentation, model_host, pairs_to_compare
    from yolov5_dattn.shipped import resolve
    missing = [flag for flag, value in (("--data", opt.data), ("--cfg", opt.cfg), ("--epochs", opt.epochs),
                                        ("--imgsz", opt.imgsz)) if value is None]
    if missing:
        raise UserError(f"{' '.join(missing)} missing: an ablation needs --data, --cfg, --epochs and --imgsz "
                        f"(--preset demo sets --epochs and --imgsz; --resume continues one)")
    data = resolve(opt.data, "data")
    if not Path(data).is_file():
        raise UserError(f"--data {opt.data} not found: pass the path of a dataset YAML or a shipped name such as "
                        f"demo_shapes.yaml")
    if opt.weights and not Path(opt.weights).is_file():
        raise UserError(f"--weights {opt.weights} not found: pass an existing .pt checkpoint")
    for flag, cfg in [("--cfg", c) for c in opt.cfg] + ([("--baseline", opt.baseline)] if opt.baseline else []):
        shipped_ultralytics = str(cfg).replace("\\", "/").startswith("ultralytics/")  # as `configs` lists them
        if shipped_ultralytics or model_host(cfg, flag)[0] == "ultralytics":  # the runs are YOLOv5's train.py
            raise UserError(f"{flag} {cfg}: an ultralytics model, and ablate trains YOLOv5 models: train it with "
                            f"yolov5-dattn yolo train, compare its cost with yolov5-dattn compare, or ablate a YOLOv5 "
                            f"config (yolov5-dattn configs lists them)")
    pairs = pairs_to_compare(opt.cfg, opt.baseline)
    tasks = {is_segmentation(_read_yaml(c, "--cfg")) for c, _ in pairs} | \
        {is_segmentation(_read_yaml(b, "--baseline")) for _, b in pairs}
    if len(tasks) > 1:
        raise UserError("--cfg: mixes detection and segmentation models (and their data differ): ablate one task "
                        "at a time")
    task = "segment-train" if tasks.pop() else "train"
    return ablation.make_plan(task, str(Path(data).resolve()), [c.resolve() for c, _ in pairs],
                              [b.resolve() for _, b in pairs], opt.imgsz, opt.epochs, opt.seeds, train_args,
                              weights=str(Path(opt.weights).resolve()) if opt.weights else None,
                              transfer=opt.transfer, transfer_epochs=opt.transfer_epochs, threads=opt.threads)


def _header(plan: dict) -> str:
    return (f"data {plan['data']}, imgsz {plan['imgsz']}, epochs {plan['epochs']}, seeds "
            f"{' '.join(map(str, plan['seeds']))}, train flags: {' '.join(plan['train_args']) or '(none)'}")


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run (or continue) an ablation; returns 0 when every run finished, 1 when some failed, 2 with
    `error: <one line>` for bad input, 130 when interrupted."""
    parser = build_parser(prog)
    opt, train_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    from yolov5_dattn.analysis import ablation
    try:
        train_args = apply_preset(opt, train_args)
        _check_numbers(opt)
        if opt.resume:
            given = [f for f, v in (("--data", opt.data), ("--cfg", opt.cfg), ("--epochs", opt.epochs),
                                    ("--imgsz", opt.imgsz), ("--weights", opt.weights)) if v is not None]
            if given or train_args or opt.transfer:
                raise UserError(f"--resume continues an ablation as it was planned: drop "
                                f"{' '.join(given + train_args[:1]) or '--transfer'}")
            folder, plan, continuing = ablation.choose_folder(Path(opt.project), opt.name, None, opt.resume)
        else:
            _check_train_args(train_args)
            plan = new_plan(opt, train_args)
            folder, plan, continuing = ablation.choose_folder(Path(opt.project), opt.name, plan, None, opt.exist_ok)
            if not continuing:
                _validate_runs(plan, folder)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2

    warning = ablation.weak_seeds_warning(plan["seeds"])
    if warning:
        print(warning, file=sys.stderr, flush=True)
    runs = ablation.plan_runs(plan)
    folder.mkdir(parents=True, exist_ok=True)
    if not continuing:
        ablation.write_json(folder / "plan.json", plan)
    done_before = [r for r in runs if (folder / "status" / f"{r.key}.json").is_file()]
    print(f"ablation {folder}: {len(runs)} runs ({len(done_before)} already finished)" if continuing
          else f"ablation {folder}: {len(runs)} runs", flush=True)
    print(f"  {_header(plan)}", flush=True)

    cost = ablation.read_json(folder / "cost.json")
    if cost is None:
        import torch
        if plan.get("threads"):
            torch.set_num_threads(plan["threads"])
        print("  measuring params, GFLOPs and latency of each model ...", flush=True)
        cost = ablation.measure_cost(list(dict.fromkeys(r.cfg for r in runs)), _nc_of(plan["data"]), plan["imgsz"],
                                     runs=opt.latency_runs)
        ablation.write_json(folder / "cost.json", cost)

    failed = 0
    try:
        for i, run in enumerate(runs, 1):
            status_file = folder / "status" / f"{run.key}.json"
            previous = ablation.read_json(status_file)
            if previous is not None:
                failed += previous["status"] != "done"
                print(f"[{i}/{len(runs)}] {run.key}: {previous['status']} before, skipped", flush=True)
                continue
            log = folder / "logs" / f"{run.key}.log"
            print(f"[{i}/{len(runs)}] {run.key}: training {run.epochs} epochs ({run.start}; log {log}) ...",
                  flush=True)
            start = time.time()
            status = ablation.execute_run(plan, run, folder, stream=opt.stream)
            if status["status"] == "done":
                m = status["metrics"]
                e1 = m["epoch1"]["map50"]
                print(f"[{i}/{len(runs)}] {run.key}: done in {(time.time() - start) / 60:.1f} min: mAP50 "
                      f"{m['final']['map50']:.3f}, mAP50-95 {m['final']['map']:.3f}"
                      + (f", epoch-1 mAP50 {e1:.3f}" if e1 is not None else ""), flush=True)
            else:
                failed += 1
                print(f"[{i}/{len(runs)}] {run.key}: {status['status'].upper()}: {status['error']}", flush=True)
            ablation.write_results(folder, plan, cost, plot=False)
    except KeyboardInterrupt:
        ablation.write_results(folder, plan, cost, plot=False)
        print(f"\ninterrupted: the finished runs are kept; run the same command again (or {prog or 'ablate'} "
              f"--resume {folder}) to continue", file=sys.stderr)
        return 130
    ablation.write_results(folder, plan, cost, plot=not opt.no_plot)
    print()
    print((folder / "results.md").read_text())
    print(f"wrote {folder / 'results.md'}, {folder / 'results.json'}"
          + ("" if opt.no_plot else f", {folder / 'results.png'}"))
    return 1 if failed else 0


OWNED = {flag: ours for flag, ours in
         (("--cfg", "--cfg"), ("--data", "--data"), ("--epochs", "--epochs"), ("--imgsz", "--imgsz"),
          ("--img", "--imgsz"), ("--img-size", "--imgsz"), ("--seed", "--seeds"), ("--project", "--project"),
          ("--name", "--name"), ("--exist-ok", "--exist-ok"), ("--resume", "--resume"), ("--evolve", None),
          ("--weights", "--weights"))}
