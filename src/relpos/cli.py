"""The ``relpos`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain an encoder",
        description=(
            "Pretrain an encoder with a relative-position pretext task. Settings resolve as: "
            "defaults < --config YAML < --modality/--pretext < the flags below < --set."
        ),
    )
    p.add_argument("--modality", help="modality name (default: eeg); see `relpos plugins`")
    p.add_argument("--pretext", help="pretext name (default: part); see `relpos plugins`")
    p.add_argument("--data", help="file or folder to train on (default: the modality's bundled sample)")
    p.add_argument("--out", help="run directory (default: runs/<modality>-<pretext>)")
    # Read as text and checked like --set train.steps=N, so a bad value gets the config's sentence
    # (key, value, allowed range) rather than argparse's usage block.
    p.add_argument("--steps", help="training steps (train.steps)")
    p.add_argument("--seed", help="random seed (train.seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")
    p.add_argument("--config", help="YAML config file, e.g. configs/eeg_part.yaml")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set pretext.n_pairs=64 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import check_path_value, check_run_dir_usable, resolve_config
    from .training import train

    # --steps/--seed/--device are shorthands for --set; paths are applied verbatim afterwards
    # (not parsed as YAML), so any file name survives.
    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, key in (("steps", "train.steps"), ("seed", "train.seed"), ("device", "train.device"))
        if getattr(args, flag) is not None
    ]
    overrides = [*overrides, *args.overrides]
    if args.resume:
        from .training import resume_config

        # What the command line leaves unset comes from the run itself, so `--resume --out DIR
        # --steps N` continues the run as it was; train() refuses anything set that differs.
        run_dir = (
            check_path_value("--out", args.out) if args.out is not None
            else resolve_config(args.config, args.modality, args.pretext, overrides).run_dir()
        )
        config = resume_config(run_dir, args.config, args.modality, args.pretext, overrides)
    else:
        config = resolve_config(args.config, args.modality, args.pretext, overrides)
    if args.data is not None:
        config.data = check_path_value("--data", args.data)
    if args.out is not None:
        config.out = check_path_value("--out", args.out)
    if args.no_progress:
        config.train.progress = False
    if args.print_config:
        sys.stdout.write(config.to_yaml())
        return 0
    check_run_dir_usable(config.run_dir())  # a file in the way is found before the data is read
    result = train(config, resume=args.resume)
    steps = f"{result.step} step" + ("" if result.step == 1 else "s")
    against = f" ({result.baseline_summary})" if result.baseline_summary else ""
    from .distributed import launch_rank

    if launch_rank() == 0:  # under torchrun, once for the run rather than once per process
        print(f"relpos: trained {steps}, final loss {result.loss:.4f}{against}; run directory: {result.run_dir}")
    return 0


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run's encoder on labelled data (linear probe, kNN, fine-tuning)",
        description=(
            "Score the encoder of a finished run on a held-out split (the data set's own test split, "
            "else by subject, else by recording, else by contiguous blocks of time within the one "
            "recording): accuracy, balanced accuracy, macro-F1 and Cohen's "
            "kappa, as mean ± std over --repeats. Results go to RUN_DIR/eval/ as JSON and a CSV row "
            "(for an exported NAME.safetensors, to NAME-eval/ beside it). For the run's own weights it also writes "
            "the evaluation card, RUN_DIR/eval/PROTOCOL-DATA.json and .md: random init of the same architecture "
            "with the same seeds, 95 % intervals, the difference, the leakage check and hashes (docs/evaluation.md)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="run directory written by `relpos train`, or a file written by `relpos export`")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="print the evaluation cards of two runs on the same data side by side (nothing is computed)")
    p.add_argument("--no-card", action="store_true",
                   help="score only --init's encoder, without the card (random init beside it, intervals, leakage)")
    p.add_argument("--protocol", choices=("linear", "knn", "finetune"),
                   help="linear probe or kNN on frozen features, or fine-tuning (default: linear; "
                        "finetune for --init supervised)")
    p.add_argument("--data", help="labelled data for the run's modality (default: the data the run was trained on)")
    p.add_argument("--features", choices=("cls", "mean", "both", "tokens", "grid"), default="cls",
                   help="CLS token (an encoder without tokens, e.g. resnet32: its vector), mean of the patch "
                        "tokens, both, the patch tokens concatenated in grid order (keeps their order; N x dim "
                        "numbers per window), or grid: the whole input's vector followed by those of an "
                        "eval.grid x eval.grid grid of patches (Spatial Reasoning's evaluation) (default: cls)")
    p.add_argument("--label-fraction", default="1.0", metavar="F|N[,...]",
                   help="fraction of the training labels per class, e.g. 0.01, or an integer number of "
                        "subjects, e.g. 5; several separated by commas draw the card's label-efficiency curve, "
                        "e.g. 0.01,0.05,0.1,1.0 (default: 1.0, every label)")
    p.add_argument("--repeats", type=int, default=1, help="repeats with seeds SEED, SEED+1, ..., at most 100 (default: 1)")
    p.add_argument("--init", choices=("pretrained", "teacher", "random", "supervised"), default="pretrained",
                   help="the run's weights (a dino/pw-self/sove run's student), its EMA teacher's weights, the same "
                        "architecture untrained, or the supervised baseline "
                        "(untrained, fine-tuned on the labels) (default: pretrained)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the first repeat (default: 0)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="an evaluation setting, e.g. --set eval.steps=100 or --set eval.cs=[0.1,1], or a modality "
             "setting, e.g. --set modality.labels=annotations (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .config import check_path_value, parse_override
    from .errors import ConfigError
    from .evaluation import evaluate

    options: dict = {}
    modality: dict = {}
    for text in args.overrides:
        path, value = parse_override(text)
        if len(path) == 1:
            path = ["eval", *path]  # a bare KEY=VALUE is an evaluation setting
        if path[0] not in ("eval", "modality") or len(path) != 2:
            raise ConfigError(
                f"Invalid --set {text!r}: `relpos eval` takes eval.KEY=VALUE or modality.KEY=VALUE, "
                f"e.g. eval.steps=100."
            )
        (options if path[0] == "eval" else modality)[path[1]] = value
    if args.no_progress:
        options["progress"] = False
    from .evaluation.card import compare, format_card, parse_label_fractions, write_card

    if args.compare:
        if args.run_dir is not None:
            raise ConfigError(
                f"Invalid arguments: give RUN_DIR or --compare RUN_A RUN_B, not both (got RUN_DIR {args.run_dir!r})."
            )
        print(compare(*(check_path_value("--compare", run, "") for run in args.compare), protocol=args.protocol))
        return 0
    if args.run_dir is None:
        raise ConfigError("Missing RUN_DIR: give a run directory (or an exported file) to evaluate, or --compare RUN_A RUN_B.")
    fractions = parse_label_fractions(args.label_fraction)  # before anything is read
    if not args.no_card and args.init in ("pretrained", "teacher"):
        card = write_card(
            check_path_value("RUN_DIR", args.run_dir, ""), protocol=args.protocol,
            data=check_path_value("--data", args.data, "the data the run was trained on"), features=args.features,
            label_fractions=fractions, repeats=args.repeats, init=args.init, seed=args.seed,
            modality_overrides=modality or None, **options,
        )
        if args.json:
            print(json.dumps(card.to_dict(), indent=2, default=str))
        else:
            sys.stdout.write("".join(card.tables) + "\n" + format_card(card.to_dict()))
        if card.path is not None:
            print(f"relpos: results written to {card.path} and {card.path.with_suffix('.md')} (the evaluation card), "
                  f"and each encoder's to {card.path.parent / 'results.csv'}", file=sys.stderr)
        return 0
    if len(fractions) > 1:
        raise ConfigError(
            f"Invalid value for '--label-fraction': several values ({args.label_fraction}) draw the card's "
            f"label-efficiency curve, which needs the run's own weights and the card (leave out --no-card and --init "
            f"{args.init})."
        )
    result = evaluate(
        check_path_value("RUN_DIR", args.run_dir, ""), protocol=args.protocol,
        data=check_path_value("--data", args.data, "the data the run was trained on"), features=args.features,
        label_fraction=fractions[0], repeats=args.repeats, init=args.init,
        seed=args.seed, modality_overrides=modality or None, **options,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        sys.stdout.write(result.format_table())
    if result.path is not None:
        print(f"relpos: results written to {result.path} and {result.path.parent / 'results.csv'}", file=sys.stderr)
    return 0


def _plugins_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed modalities, pretexts and data sets",
                       description="List every modality, pretext and data set, who registered it, and plugins "
                                   "that failed to load.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .encoders import option_names
    from .plugins import load_registry, origin

    registry = load_registry()
    kinds = (("modality", "Modalities"), ("pretext", "Pretexts"), ("dataset", "Data sets"), ("encoder", "Encoders"))
    entries = [e.as_dict() for kind, _ in kinds for e in registry.entries[kind].values()]
    for entry in entries:
        if entry["kind"] == "pretext":
            cls = registry.get("pretext", entry["name"])
            entry["modalities"] = [
                m for m in registry.names("modality") if cls.supports(registry.get("modality", m))
            ]
        elif entry["kind"] == "dataset":
            entry["modality"] = registry.get("dataset", entry["name"]).modality
        elif entry["kind"] == "encoder":
            cls = registry.get("encoder", entry["name"])
            entry["outputs"], entry["axes"] = list(cls.outputs), list(cls.n_axes)
            entry["options"] = [n for n in option_names(cls) if n != "arch"]  # its own encoder.KEY settings
    failures = [f.as_dict() for f in registry.failures]
    if args.json:
        print(json.dumps({"plugins": entries, "failed": failures}, indent=2))
        return 0
    for kind, title in kinds:
        print(f"{title}:")
        rows = [e for e in entries if e["kind"] == kind]
        width = max((len(e["name"]) for e in rows), default=0)
        for e in sorted(rows, key=lambda r: r["name"]):
            extra = ""
            if kind == "pretext":
                extra = f" [modalities: {', '.join(e['modalities'])}]"
            elif kind == "dataset" and e["modality"]:
                extra = f" [modality: {e['modality']}]"
            elif kind == "encoder":
                options = f"; options: {', '.join(e['options'])}" if e["options"] else ""
                extra = f" [outputs: {', '.join(e['outputs'])}; axes: {', '.join(map(str, e['axes']))}{options}]"
            print(f"  {e['name']:<{width}}  {e['description']}  ({origin(e['plugin'], e['distribution'], in_parentheses=True)}){extra}")
        if not rows:
            print("  (none)")
    if failures:
        print("Failed to load:")
        for f in failures:
            print(f"  {f['plugin']} ({f['distribution']}): {f['error']}")
    return 0


def _data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect data, fetch public data sets",
                       description="See what relpos makes of your data, or download a public data set.")
    data_sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: _missing_subcommand(p))

    inspect = data_sub.add_parser(
        "inspect",
        help="show the files, channels, sampling rates, windows and labels relpos sees",
        description=(
            "Open data exactly as `relpos train` would and report what relpos sees: each file's "
            "channels, sampling rate, duration and annotations, the windows and label counts, and "
            "what was skipped or dropped, and why."
        ),
    )
    inspect.add_argument(
        "path", nargs="?", help="file, folder, glob or list file (default: the modality's sample)"
    )
    inspect.add_argument("--modality", help="modality name (default: eeg); see `relpos plugins`")
    inspect.add_argument("--config", help="YAML config file whose 'modality' section applies")
    inspect.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="modality setting, e.g. --set modality.window_s=10 (repeatable)",
    )
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_cmd_data_inspect)

    fetch = data_sub.add_parser(
        "fetch",
        help="download a public data set (see `relpos plugins` for the names)",
        description="Download a registered public data set and print the paths of its files.",
    )
    fetch.add_argument("name", help="data-set name, e.g. sleep-edf")
    fetch.add_argument(
        "--dest", help="folder to download into (default: $RELPOS_DATA_DIR/NAME or ~/relpos_data/NAME)"
    )
    fetch.add_argument("--subjects", help="subject indices, e.g. 0,1,2 or 0-4 (default: the data set's choice)")
    fetch.add_argument(
        "--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
        help="a data-set specific option, e.g. --option recording=1 (repeatable)",
    )
    fetch.add_argument("--json", action="store_true", help="machine-readable output")
    fetch.set_defaults(func=_cmd_data_fetch)


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _modality_for_inspect(args: argparse.Namespace):
    from .config import DEFAULT_MODALITY, build_dataclass, check_override_path, load_yaml, parse_override
    from .errors import ConfigError
    from .plugins import get_modality

    values: dict = {}
    nested_paths = []  # modality.KEY.SUB=VALUE: KEY must be a mapping field, checked once the class is known
    if args.config:
        section = load_yaml(args.config).get("modality") or {}
        if isinstance(section, str):
            section = {"name": section}
        if not isinstance(section, dict):
            raise ConfigError(f"Config section 'modality' in {args.config!r} must be a mapping, got {section!r}.")
        values.update(section)
    for text in args.overrides:
        path, value = parse_override(text)
        if path[0] != "modality":
            if len(path) == 1:
                path = ["modality", *path]  # a bare KEY=VALUE means a modality setting
            else:
                raise ConfigError(
                    f"Invalid --set {text!r}: `relpos data inspect` takes modality settings only, "
                    f"e.g. modality.window_s=10."
                )
        if len(path) == 1:
            values["name"] = value
        else:
            values[path[1]] = value if len(path) == 2 else _nested(values.get(path[1]), path[2:], value)
            if len(path) > 2:
                nested_paths.append(path)
    name = str(args.modality or values.pop("name", None) or DEFAULT_MODALITY)
    values.pop("name", None)
    cls = get_modality(name)
    for path in nested_paths:
        check_override_path(cls.Config, path)
    return cls(build_dataclass(cls.Config, values, "modality"))


def _nested(node, path: list[str], value):
    node = dict(node) if isinstance(node, dict) else {}
    node[path[0]] = value if len(path) == 1 else _nested(node.get(path[0]), path[1:], value)
    return node


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from .config import check_path_value
    from .errors import printable
    from .paths import refuse_special_file

    path = check_path_value("PATH", args.path, "the modality's sample")  # '' would mean the current folder
    refuse_special_file(path)  # before a modality opens it: reading a pipe can block forever
    modality = _modality_for_inspect(args)
    report = modality.inspect(path)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        sys.stdout.write(format_inspect_report(report))
    if report.get("problem"):
        # Reported above, file by file; the exit status says nothing is usable.
        print(f"relpos: error: {printable(report['problem'])}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _short_list(names: Sequence[str], limit: int = 6) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _num(value) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else str(value)


_FILE_KEYS = {"path", "channels", "sfreq", "duration_s", "annotations", "n_windows", "channel_status"}
_REPORT_KEYS = {
    "modality", "source", "n_windows", "channels", "extent", "sfreq", "ch_names", "label_counts",
    "recordings", "n_subjects", "files", "skipped", "dropped", "cache", "problem", "recording_time",
}


def _recording_time_line(summary) -> str | None:
    """``Recording time: 2 recordings, onsets 0–79470 s, windows of 30 s`` (see ``modality.recording_time``)."""
    if not isinstance(summary, dict) or "known" not in summary:
        return None
    if not summary["known"]:
        why = "trial archive" if summary.get("unit") else "the modality gives no onsets"
        return f"Recording time: none ({why}): pretexts that relate windows of one recording refuse it"
    if "recordings" not in summary:
        return None  # no window
    unit = summary.get("unit") or "s"
    n = summary["recordings"]
    if unit == "window":  # images: each one a recording of one window
        return f"Recording time: {n} recording{'s' if n != 1 else ''} of one window each"
    lengths = "–".join(f"{d:.10g}" for d in summary.get("durations") or [])
    return (
        f"Recording time: {n} recording{'s' if n != 1 else ''}, onsets {summary['first_onset']:.10g}–"
        f"{summary['last_onset']:.10g} {unit}, windows of {lengths} {unit}"
    )


def _channel_status_lines(statuses, indent: str) -> list[str]:
    """Units of the channels, then one line per channel that is not plainly usable."""
    if not isinstance(statuses, list) or not statuses:
        return []
    units: dict[str, int] = {}
    for entry in statuses:
        units[str(entry.get("unit"))] = units.get(str(entry.get("unit")), 0) + 1
    lines = [f"{indent}units: " + ", ".join(f"{unit} ×{count}" for unit, count in units.items())]
    problems = [e for e in statuses if e.get("status") != "ok"]
    if not problems:
        lines.append(f"{indent}channel status: all {len(statuses)} ok")
    for entry in problems:
        lines.append(f"{indent}channel {entry.get('name')!r}: {entry.get('status')}")
    return lines


def format_inspect_report(report: dict) -> str:
    """The readable form of :meth:`relpos.modality.Modality.inspect`'s report."""
    lines = [f"Modality: {report.get('modality')}", f"Source: {report.get('source')}"]
    files = report.get("files") or []
    if files:
        lines.append(f"Files ({len(files)}):")
    for entry in files:
        lines.append(f"  {entry.get('path')}")
        channels = entry.get("channels")
        if isinstance(channels, (list, tuple)):
            lines.append(f"    channels: {len(channels)} ({_short_list(channels)})")
        elif channels is not None:
            lines.append(f"    channels: {channels}")
        if entry.get("sfreq") is not None:
            lines.append(f"    sfreq: {_num(entry['sfreq'])} Hz")
        if entry.get("duration_s") is not None:
            lines.append(f"    duration: {float(entry['duration_s']):.1f} s")
        annotations = entry.get("annotations")
        if isinstance(annotations, dict):
            text = ", ".join(f"{desc} ×{count}" for desc, count in annotations.items()) or "none"
            lines.append(f"    annotations: {text}")
        for key, value in entry.items():
            if key not in _FILE_KEYS and value is not None:
                lines.append(f"    {key.replace('_', ' ')}: {value}")
        lines += _channel_status_lines(entry.get("channel_status"), "    ")
        if entry.get("n_windows") is not None:
            lines.append(f"    windows: {entry['n_windows']}")
    if not files and report.get("recordings"):
        recordings = report["recordings"]
        lines.append(f"Recordings ({len(recordings)}):")
        for name, count in list(recordings.items())[:20]:
            lines.append(f"  {name}: {count} windows")
        if len(recordings) > 20:
            lines.append(f"  ... (+{len(recordings) - 20} more)")
    extent = report.get("extent") or []
    lines.append(
        f"Windows: {report.get('n_windows')} (each {report.get('channels')} channels × "
        f"{' × '.join(str(e) for e in extent) or '?'})"
    )
    ch_names = report.get("ch_names") or []
    if ch_names:
        lines.append(f"Channels: {len(ch_names)} ({_short_list(ch_names)})")
    if report.get("sfreq") is not None:
        lines.append(f"Sampling rate after preprocessing: {_num(report['sfreq'])} Hz")
    if report.get("n_subjects") is not None:
        lines.append(f"Subjects: {report['n_subjects']}, recordings: {len(report.get('recordings') or {})}")
    labels = report.get("label_counts") or {}
    lines.append("Labels: " + (", ".join(f"{name} {count}" for name, count in labels.items()) or "none"))
    if _recording_time_line(report.get("recording_time")):
        lines.append(_recording_time_line(report.get("recording_time")))
    skipped = report.get("skipped") or []
    if skipped:
        lines.append(f"Skipped ({len(skipped)}):")
        for item in skipped:
            reason = f": {item['reason']}" if item.get("reason") else ""
            lines.append(f"  {item.get('path')}{reason}")
            lines += _channel_status_lines(item.get("channel_status"), "    ")
    dropped = report.get("dropped") or {}
    if dropped:
        lines.append(f"Dropped windows ({sum(int(v) for v in dropped.values())}):")
        for reason, count in dropped.items():
            lines.append(f"  {reason}: {count}")
    from .space import CONTRACT_KEY, format_contract

    lines += format_contract(report.get(CONTRACT_KEY), limit=80)  # channels placed by position (relpos.space)
    for key, value in report.items():  # whatever a modality's own inspect() adds
        if key in _REPORT_KEYS or key == CONTRACT_KEY or value in (None, {}, []):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        lines.append(f"{key.replace('_', ' ').capitalize()}: {value}")
    cache = report.get("cache")
    if isinstance(cache, dict) and cache.get("path"):
        lines.append(f"Cache: {'reused' if cache.get('hit') else 'written'} {cache['path']}")
    from .errors import printable

    # File, channel and annotation names come from the user's files: a newline or a terminal
    # escape sequence in one is shown escaped, never acted on.
    return "\n".join(printable(line) for line in lines) + "\n"


def parse_subjects(text: str | None) -> list[int] | None:
    """``"0,1,5-7"`` -> ``[0, 1, 5, 6, 7]``; None stays None."""
    from .errors import ConfigError

    if text is None:
        return None
    subjects: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                first, _, last = part.partition("-")
                lo, hi = int(first), int(last)
                if hi < lo:
                    raise ValueError(part)
                subjects.extend(range(lo, hi + 1))
            else:
                subjects.append(int(part))
    except ValueError:
        raise ConfigError(
            f"Invalid value for '--subjects': expected subject indices such as 0,1,2 or 0-4, got {text!r}."
        ) from None
    if not subjects or any(s < 0 for s in subjects):
        raise ConfigError(
            f"Invalid value for '--subjects': expected non-negative subject indices such as 0,1,2, got {text!r}."
        )
    return subjects


def _fetch_options(dataset, texts: Sequence[str]) -> dict:
    import inspect as pyinspect

    from .config import parse_override
    from .errors import ConfigError, did_you_mean

    options = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) != 1:
            raise ConfigError(f"Invalid --option {text!r}: expected KEY=VALUE, e.g. recording=1.")
        options[path[0]] = value
    params = pyinspect.signature(dataset.fetch).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options  # the data set validates its own options
    accepted = [
        n for n, p in params.items()
        if n not in ("dest", "subjects") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"Data set {dataset.name!r} has no option {key!r}.{did_you_mean(key, accepted)} "
                f"Options: {', '.join(accepted) or 'none'}."
            )
    return options


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .datasets import data_root
    from .plugins import get_dataset

    cls = get_dataset(args.name)
    subjects = parse_subjects(args.subjects)
    dataset = cls()
    options = _fetch_options(dataset, args.options)
    dest = Path(args.dest).expanduser() if args.dest else data_root() / cls.name
    files = [Path(f) for f in dataset.fetch(dest, subjects=subjects, **options)]
    if args.json:
        print(json.dumps({"dataset": cls.name, "modality": cls.modality, "dest": str(dest),
                          "files": [str(f) for f in files]}, indent=2))
        return 0
    for path in files:
        print(path)
    hint = f"; train on them with `relpos train --modality {cls.modality} --data {dest}`" if cls.modality else ""
    print(f"relpos: {len(files)} files of data set {cls.name!r} in {dest}{hint}", file=sys.stderr)
    return 0


def _show_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="draw pictures of a run (loss curves, and what its pretext can draw) as PNG files",
        description=(
            "Write PNG pictures of a run and print their paths: 'loss' (every column of metrics.csv) "
            "for any run, 'eval' (the label-efficiency curves of its evaluation cards), 'attention' for a ViT encoder, and the pictures its pretext draws (PART: 'reconstruction', 'uncertainty', "
            "'symmetry'). Without WHAT, every picture the run's pretext can draw."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory written by `relpos train`")
    p.add_argument("what", metavar="WHAT", nargs="?", help="one picture, e.g. loss or symmetry (default: all)")
    p.add_argument("--data", help="data to draw from, opened with the run's modality settings "
                                  "(default: the data the run was trained on)")
    p.add_argument("--out", help="folder for the PNG files (default: RUN/plots)")
    p.add_argument("--samples", default="3", help="samples a model picture draws, 1 to 64 (default: 3)")
    p.add_argument("--seed", default="0", help="seed of the patches a picture samples (default: 0)")
    p.set_defaults(func=_cmd_show)


def _int_option(name: str, text: str, low: int, high: int) -> int:
    from .errors import ConfigError

    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"Invalid value for {name!r}: expected an integer from {low} to {high}, got {text!r}.")
    return value


def _cmd_show(args: argparse.Namespace) -> int:
    from .config import check_path_value
    from .show import show

    samples = _int_option("--samples", args.samples, 1, 64)
    seed = _int_option("--seed", args.seed, 0, 2**32 - 1)
    result = show(
        check_path_value("RUN", args.run_dir, ""), args.what, data=check_path_value("--data", args.data, "the run's data"),
        out_dir=check_path_value("--out", args.out, "RUN/plots"), n_samples=samples, seed=seed,
    )
    for path in result.paths:
        print(path)
    from .show import run_contract
    from .space import format_contract

    for line in format_contract(run_contract(args.run_dir)):  # a run of channel tokens: its channels
        print(f"relpos: {line}", file=sys.stderr)
    for name, numbers in result.numbers.items():
        if numbers:
            print(f"relpos: {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()), file=sys.stderr)
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's encoder to a safetensors file (relpos's own, or a timm ViT state dict)",
        description=(
            "Export the encoder of a run: 'safetensors' (weights plus a JSON description, loadable with "
            "relpos.load_encoder(FILE)) or 'timm' (a 2-D image ViT's state dict for "
            "timm.create_model(..., pretrained_cfg_overlay=dict(file=FILE)))."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory written by `relpos train`")
    p.add_argument("--format", default="safetensors", help="safetensors or timm (default: safetensors)")
    p.add_argument("--out", help="file to write (default: RUN/export/encoder.safetensors, or encoder-timm.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--teacher", action="store_true", help="export the EMA teacher's encoder (dino, pw-self, sove)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .config import check_path_value
    from .export import export

    result = export(
        check_path_value("RUN", args.run_dir, ""), format=args.format,
        out=check_path_value("--out", args.out, "RUN/export/"), force=args.force,
        weights="teacher" if args.teacher else "student",
    )
    print(result.path)
    if result.format == "timm":
        for line in result.converted:
            print(f"relpos: converted {line}", file=sys.stderr)
        print(f"relpos: load it with: {result.create_model_call()}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relpos",
        description="Self-supervised pretraining with relative-position pretext tasks.",
    )
    parser.add_argument("--version", action="version", version=f"relpos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub)
    _eval_parser(sub)
    _data_parser(sub)
    _plugins_parser(sub)
    _show_parser(sub)
    _export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .errors import RelposError

    try:
        return args.func(args)
    except RelposError as exc:
        from .training import TrainingError

        from .distributed import should_report

        # In a distributed run one process reports an error every process met; the others stay quiet.
        if should_report(exc):
            from .errors import printable

            print(f"relpos: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, TrainingError) else EXIT_USAGE
    except KeyboardInterrupt as exc:
        from .distributed import should_report
        from .training import TrainingInterrupted

        if not should_report(exc):  # Ctrl-C reaches every process of a torchrun launch: say it once
            return 130
        if not isinstance(exc, TrainingInterrupted):
            print("relpos: interrupted.", file=sys.stderr)
        elif exc.checkpoint is None:
            print("relpos: interrupted before the first checkpoint; nothing of this run was kept.", file=sys.stderr)
        else:
            print(f"relpos: interrupted; the last checkpoint (step {exc.step}) is kept in {exc.checkpoint} "
                  f"(continue with --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
