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
    p.add_argument("--steps", type=int, help="training steps (train.steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
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
    from .config import resolve_config
    from .training import train

    # --steps/--seed/--device are shorthands for --set; paths are applied verbatim afterwards
    # (not parsed as YAML), so any file name survives.
    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, key in (("steps", "train.steps"), ("seed", "train.seed"), ("device", "train.device"))
        if getattr(args, flag) is not None
    ]
    config = resolve_config(args.config, args.modality, args.pretext, [*overrides, *args.overrides])
    if args.data is not None:
        config.data = args.data
    if args.out is not None:
        config.out = args.out
    if args.no_progress:
        config.train.progress = False
    if args.print_config:
        sys.stdout.write(config.to_yaml())
        return 0
    result = train(config, resume=args.resume)
    print(f"relpos: trained {result.step} steps, final loss {result.loss:.4f}; run directory: {result.run_dir}")
    return 0


def _plugins_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed modalities and pretexts",
                       description="List every modality and pretext, who registered it, and plugins that failed to load.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_plugins)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import load_registry

    registry = load_registry()
    entries = [e.as_dict() for kind in ("modality", "pretext") for e in registry.entries[kind].values()]
    for entry in entries:
        if entry["kind"] == "pretext":
            cls = registry.get("pretext", entry["name"])
            entry["modalities"] = [
                m for m in registry.names("modality") if cls.supports(registry.get("modality", m))
            ]
    failures = [f.as_dict() for f in registry.failures]
    if args.json:
        print(json.dumps({"plugins": entries, "failed": failures}, indent=2))
        return 0
    for kind, title in (("modality", "Modalities"), ("pretext", "Pretexts")):
        print(f"{title}:")
        rows = [e for e in entries if e["kind"] == kind]
        width = max((len(e["name"]) for e in rows), default=0)
        for e in sorted(rows, key=lambda r: r["name"]):
            extra = f" [modalities: {', '.join(e['modalities'])}]" if kind == "pretext" else ""
            print(f"  {e['name']:<{width}}  {e['description']}  (plugin {e['plugin']!r} from {e['distribution']}){extra}")
        if not rows:
            print("  (none)")
    if failures:
        print("Failed to load:")
        for f in failures:
            print(f"  {f['plugin']} ({f['distribution']}): {f['error']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relpos",
        description="Self-supervised pretraining with relative-position pretext tasks.",
    )
    parser.add_argument("--version", action="version", version=f"relpos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub)
    _plugins_parser(sub)
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

        print(f"relpos: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, TrainingError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("relpos: interrupted; the last checkpoint is kept (continue with --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
