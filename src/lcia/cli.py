"""``lcia run | sweep | compare | extend | methods | metrics | report | eval | route | ask``: parses arguments,
calls the library (the Python API of ``lcia.api`` where there is one)."""

from __future__ import annotations

import argparse
import sys

from lcia.core.runtime import offline_and_quiet

offline_and_quiet()

from rich.console import Console  # noqa: E402

from lcia.errors import Interrupted, LciaError  # noqa: E402

console = Console()
if not console.is_terminal:  # piped or logged: tables at full width, not cut to 80 columns of "…"
    console.width = 240


def _log(line: str) -> None:
    """A plain line: never wrapped (a long path stays one line to copy), brackets in it printed as they are."""
    console.print(line, soft_wrap=True, markup=False)


def _cmd_run(args) -> None:
    from lcia import api
    from lcia.config import load_config
    from lcia.core.distributed import process_state
    from lcia.pipeline.run_files import RunDir

    console.quiet = not process_state().is_main_process  # under `accelerate launch`, rank 0 reports
    if args.resume:
        if args.config or args.set or args.overwrite:
            raise LciaError("--resume takes the run directory's own config.yaml: give no CONFIG, --set or --overwrite")
        cfg = RunDir(args.resume).config()
    else:
        cfg = load_config(args.config, args.set)
    console.print(
        f"[bold]lcia run[/]: stream {cfg.stream}, method {cfg.method.name}, seed {cfg.seed} -> {cfg.run_dir()}",
        soft_wrap=True,
    )
    run = api.run(cfg, overwrite=args.overwrite, resume=bool(args.resume), progress=not args.quiet, log=_log)
    _print_results(run)


def _cmd_extend(args) -> None:
    from lcia import api

    _print_results(api.load(args.run_dir).extend(args.tasks, progress=not args.quiet, log=_log))


def _print_results(run) -> None:
    from lcia.reporting.tables import matrix_table, metrics_table

    results = run.results
    console.print(matrix_table(results))
    console.print(metrics_table(results["metrics"], results.get("intervals")))
    if "routing" in results:
        console.print(f"routing accuracy (last row): {results['routing']['final']:.3f}")
    _log(f"written to {run.path}/ (results.json, predictions.jsonl, manifest.json, config.yaml, adapters/)")


def _cmd_metrics(args) -> None:
    import json

    from lcia.pipeline.run_files import RunDir
    from lcia.pipeline.stream_run import metrics_of
    from lcia.reporting.tables import matrix_table, metrics_table

    run_dir = RunDir(args.run_dir)
    results = run_dir.read_json("results.json")
    resamples = args.bootstrap
    if resamples is None:  # what the run itself used
        resamples = run_dir.config().evaluation.bootstrap
    record = metrics_of(run_dir, results["tasks"], results["matrix"], resamples)
    if args.json:
        print(json.dumps(record, indent=2))
        return
    console.print(matrix_table(results))
    console.print(metrics_table(record["metrics"], record.get("intervals")))


def _cmd_eval(args) -> None:
    from lcia.pipeline.session import evaluate_saved

    scores = evaluate_saved(args.run_dir, stage=args.stage, stream=args.stream, progress=not args.quiet)
    for task, score in scores.items():
        console.print(f"{task}: {score:.3f}")


def _cmd_report(args) -> None:
    from lcia.reporting.report import default_out_dir, write_report

    path = write_report(args.run_dirs, args.out or default_out_dir(args.run_dirs))
    _log(f"written to {path} (with report.tex and figures/)")


def _list(text: str, kind=str) -> list:
    try:
        return [kind(item) for item in text.split(",") if item]
    except ValueError:
        raise LciaError(f"expected a comma-separated list, got {text!r}") from None


def _cmd_sweep(args) -> None:
    from pathlib import Path

    from lcia.config import load_config
    from lcia.sweep import run_sweep

    base = load_config(args.config, args.set)
    name = Path(args.config).stem if args.config else "default"
    report = run_sweep(
        base,
        seeds=_list(args.seeds, int) if args.seeds else [base.seed],
        orders=_list(args.orders) if args.orders else [base.data.order],
        streams=_list(args.streams) if args.streams else [base.stream],
        out=Path(args.out or f"runs/sweep-{name}"),
        progress=not args.quiet,
        log=_log,
    )
    _log(f"report: {report}")


def _mean_std(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    return f"{cell['mean']:.3f}" + (f" ± {cell['std']:.3f}" if cell["std"] is not None else "")


def _cmd_compare(args) -> None:
    import json
    from pathlib import Path

    from rich.table import Table

    from lcia.compare import run_compare, split_methods
    from lcia.config import load_config
    from lcia.evaluation.metrics import METRICS

    base = load_config(args.config, args.set)
    name = Path(args.config).stem if args.config else "default"
    path = run_compare(
        base,
        methods=split_methods(args.methods),
        seeds=_list(args.seeds, int) if args.seeds else [base.seed],
        out=Path(args.out or f"runs/compare-{name}"),
        progress=not args.quiet,
        log=_log,
        orders=_list(args.orders) if args.orders else None,
        reuse=Path(args.reuse) if args.reuse else None,
    )
    record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    table = Table(title=f"comparison (mean ± std over seeds{' and task orders' if args.orders else ''})")
    for column in ("method", "seeds", *METRICS):
        table.add_column(column, no_wrap=column == "method")
    for setting in record["settings"]:
        cells = [setting["cells"].get(m) for m in METRICS]
        table.add_row(
            setting["method"],
            str(len(setting["seeds"])),
            *(_mean_std(c) for c in cells),
        )
    console.print(table)
    _log(f"written to {path} (and comparison.json; report.md covers every run)")


def _cmd_route(args) -> None:
    from rich.table import Table

    from lcia.data.schema import Example
    from lcia.pipeline.session import open_saved

    session, _ = open_saved(args.run_dir, args.stage, model=False)
    route = session.method.explain_route(Example(args.instruction, "", ""))
    if not route.scores:
        console.print(f"{args.run_dir} ({session.cfg.method.name}): {route.rule}")
        return
    table = Table("adapter", "score", "trained on", title=f"routing ({route.rule})")
    for adapter, score in sorted(route.scores.items(), key=lambda item: -item[1]):
        mark = " <-" if adapter == route.adapter else ""
        table.add_row(adapter + mark, f"{score:.3f}", route.holds.get(adapter, ""))
    console.print(table)
    if route.scores[route.adapter] == 0:
        console.print(f"nothing routes this instruction: {route.adapter}, the first of the tied adapters, answers")


def _cmd_ask(args) -> None:
    from lcia import api

    answer = api.load(args.run_dir).ask(
        args.instruction, args.input, max_new_tokens=args.max_new_tokens, image=args.image, stage=args.stage
    )
    if answer.adapter is not None:
        console.print(f"[dim]{answer.adapter} ({answer.route.holds.get(answer.adapter, '')})[/]", soft_wrap=True)
    print(answer.text)


def _cmd_serve(args) -> None:
    from lcia.serving import serve

    serve(args.run_dir, host=args.host, port=args.port, stage=args.stage, batch_size=args.batch_size,
          log_line=_log)  # fmt: skip


def _cmd_methods(args) -> None:
    from rich.table import Table

    from lcia.methods import METHODS

    for name in sorted(METHODS) if not args.names else args.names:
        cls = _method_class(name)
        caps = cls.capabilities
        flags = [f"trains: {'yes' if caps.trains else 'no'}", f"DDP: {'yes' if caps.ddp else 'no'}"]
        flags.append(f"old data: {'yes' if caps.needs_old_data else 'no'}")
        console.print(f"[bold]{name}[/]: {(cls.__doc__ or '').strip()} [dim]({'; '.join(flags)})[/]", soft_wrap=True)
        fields = cls.Params.model_fields
        if not fields:
            continue
        table = Table("parameter", "default", "help", show_edge=False, pad_edge=False)
        for key, info in fields.items():
            table.add_row(key, repr(info.default), info.description or "")
        console.print(table)


def _method_class(name: str):
    from lcia.methods import method_class

    try:
        return method_class(name)
    except ValueError as err:
        raise LciaError(str(err)) from None


def _training_commands(sub) -> None:
    p = sub.add_parser(
        "run", help="train a stream of tasks and evaluate the (T+1) x T grid",
        epilog="Methods and their parameters (method.name, method.params.KEY): lcia methods",
    )  # fmt: skip
    p.add_argument("config", nargs="?", help="run config YAML (default: the built-in demo settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, "
                   "e.g. training.steps=60 or method.params.lam=1e5")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sweep", help="one config over seeds, task orders and streams, then one report")
    p.add_argument("config", nargs="?", help="run config YAML (default: the built-in demo settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--orders", help="comma-separated task orders: original, reverse, alphabetical")
    p.add_argument("--streams", help="comma-separated streams, e.g. ni-cit,ni-cit-diverse (instruction variants)")
    p.add_argument("--out", default=None, help="folder of the sweep's runs and report (default: runs/sweep-NAME)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("compare", help="several methods on the same stream, seeds and budget; one comparison table")
    p.add_argument("config", nargs="?", help="run config YAML (default: the built-in demo settings)")
    p.add_argument("--methods", required=True, help="comma-separated methods, each NAME or NAME:KEY=VALUE,..., "
                   "e.g. seq-lora,ewc:lam=1e5,gamma=0.9,lwf")  # fmt: skip
    p.add_argument("--seeds", help="comma-separated training seeds, e.g. 1,2,3 (default: the config's)")
    p.add_argument("--orders", help="comma-separated task orders (original, reverse, alphabetical), pooled with the "
                   "seeds: every method trains in each")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--out", default=None, help="folder of the runs and the comparison (default: runs/compare-NAME)")
    p.add_argument("--reuse", metavar="FOLDER", help="copy a run not started yet from a finished one under FOLDER "
                   "with the same config (studies that share baselines run them once)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("extend", help="train new tasks after a finished run's last stage; the grid grows both ways")
    p.add_argument("run_dir")
    p.add_argument("tasks", metavar="NEW_TASKS.yaml", help="a stream file of the new tasks (as for lcia run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_extend)

    p = sub.add_parser("methods", help="the registered methods, their capabilities and parameters with defaults")
    p.add_argument("names", nargs="*", metavar="METHOD", help="only these methods")
    p.set_defaults(func=_cmd_methods)


def _results_commands(sub) -> None:
    p = sub.add_parser("metrics", help="print a run's matrix and metrics")
    p.add_argument("run_dir")
    p.add_argument("--bootstrap", type=int, default=None, help="resamples for the intervals (default: the run's; "
                   "0: none)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("report", help="report.md, a LaTeX table and figures for one or more runs side by side")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="folder to write into (default: the run's own, or ./report)")
    p.set_defaults(func=_cmd_report)


def _saved_run_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run's saved adapter on a stream's test sets")
    p.add_argument("run_dir")
    p.add_argument("--stage", type=int, default=None, help="adapter after this stage (default: the last)")
    p.add_argument("--stream", default=None, help="another stream to evaluate on (default: the run's)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("route", help="which adapter of a run an instruction goes to, and why (the method's scores)")
    p.add_argument("run_dir")
    p.add_argument("instruction")
    p.add_argument("--stage", type=int, default=None, help="the run as after this stage (default: the last)")
    p.set_defaults(func=_cmd_route)

    p = sub.add_parser("ask", help="answer with a trained run: the instruction routed to its adapter by the method")
    p.add_argument("run_dir")
    p.add_argument("instruction")
    p.add_argument("--input", default="", help="the instance (e.g. the question); empty: the instruction alone")
    p.add_argument("--stage", type=int, default=None, help="the adapters after this stage (default: the last)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--image", default="", help="an image file, for a run on a stream with images")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("serve", help="an OpenAI-compatible chat server over a trained run (docs/serving.md)")
    p.add_argument("run_dir")
    p.add_argument("--stage", type=int, default=None, help="the adapters after this stage (default: the last)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=None, help="requests answered at once (default: the run's "
                   "evaluation.batch_size; 1: one at a time, exactly lcia ask's answers in any precision)")  # fmt: skip
    p.set_defaults(func=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    description = "Continual instruction tuning with the full evaluation grid."
    parser = argparse.ArgumentParser(prog="lcia", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _results_commands(sub)
    _saved_run_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        args.func(args)
    except Interrupted as err:
        print(f"lcia: {err}", file=sys.stderr)
        return 130
    except LciaError as err:
        print(f"lcia: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lcia: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
