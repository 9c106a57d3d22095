"""The `align` command line: `align <stage> --config FILE [key=value ...]`.

Exit codes: 0 done; 2 bad input or config (one line on stderr saying what and how to fix it);
1 an unexpected failure or an outside service that stayed down (traceback in the log).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import textwrap
from dataclasses import dataclass

from align.core.errors import AlignError, nearest

log = logging.getLogger("align")


@dataclass(frozen=True)
class Command:
    module: str
    summary: str
    positional: tuple[str, ...] = ()
    """Config keys filled from positional arguments, e.g. `align annotate push RUN` sets `pairs`."""
    options: tuple[str, ...] = ()
    """Config keys also accepted as `--key VALUE`, e.g. `align evaluate retention RUN --baseline RUN`."""
    many: bool = False
    """The last positional takes one or more values, a list (`align feedback import A.jsonl B.jsonl`)."""
    text: tuple[str, ...] = ()
    """Keys whose positional or option value is taken as typed, not read as YAML (free text with ': ')."""


# Stage commands. Modules are imported only when their command runs, so `align --help` is instant
# and no stage pays for another's heavy imports.
COMMANDS: dict[str, Command] = {
    "sft": Command("align.stages.sft", "supervised fine-tuning on conversations"),
    "reward": Command("align.stages.reward", "train a reward model on preference pairs"),
    "reward-ensemble": Command(
        "align.stages.reward_ensemble", "K reward models on bootstrap resamples (for ensemble_disagreement pairs)"
    ),
    "dpo": Command("align.stages.dpo", "direct preference optimisation of a policy"),
    "kto": Command("align.stages.kto", "KTO: optimise a policy on unpaired (or paired) desirable/undesirable examples"),
    "ppo": Command("align.stages.ppo", "online RL from a reward model: PPO, RLOO or GRPO"),
    "evaluate reward": Command("align.stages.evaluate", "pairwise accuracy and margin of a reward model"),
    "evaluate policy": Command(
        "align.stages.evaluate_policy",
        "policy vs baseline: refusals, over-refusal, brand voice, win rate, with intervals",
        ("policy",),
    ),
    "evaluate retention": Command(
        "align.stages.evaluate_retention",
        "what fine-tuning cost: IFEval, KL and drift vs the base, with intervals",
        ("policy",),
        ("baseline",),
    ),
    "generate": Command("align.stages.generate", "sample responses from a policy (vLLM or transformers)"),
    "score": Command("align.stages.score", "add reward-model scores to a generation run", ("generations",)),
    "pairs": Command(
        "align.stages.pairs", "build candidate pairs for annotators from a generation run", ("generations",)
    ),
    "redact": Command(
        "align.stages.redact",
        "redact personal data (e-mails, phones, SSNs, addresses, cards; names with presidio) in a data file",
        ("input",),
    ),
    "serve": Command(
        "align.stages.serve", "serve a policy (vLLM's OpenAI server) and log conversations and ratings", ("policy",)
    ),
    "feedback import": Command(
        "align.stages.feedback",
        "import feedback (ratings, flags, corrections): validated, redacted, deduped",
        ("inputs",),
        many=True,
    ),
    "feedback rate": Command(
        "align.feedback.rate",
        "rate a reply logged by align serve: up/down, flag, correction",
        ("serve_run", "reply_id"),
        ("rating", "flag", "correction", "user"),
        text=("reply_id", "flag", "correction", "user"),
    ),
    "feedback report": Command(
        "align.feedback.report",
        "thumbs-up share per policy run with Wilson intervals (drift between rounds)",
        ("feedback",),
        many=True,
    ),
    "feedback review": Command(
        "align.annotate.review",
        "push flagged and thumbs-down replies to Argilla for annotators to correct",
        ("feedback",),
    ),
    "feedback reviewed": Command(
        "align.annotate.review_pull",
        "pull the review dataset back as preference pairs (better reply over the logged one)",
    ),
    "annotate push": Command("align.annotate.push", "push candidate pairs to Argilla for annotators", ("pairs",)),
    "annotate pull": Command("align.annotate.pull", "pull submitted labels into a preference dataset run"),
    "annotate simulate": Command(
        "align.annotate.simulate", "simulated annotators (demos, tests, CI): real Argilla users answering by a judge"
    ),
    "annotate status": Command("align.annotate.status", "annotation progress and inter-annotator agreement"),
    "annotate serve": Command("align.annotate.serve", "start a local Argilla server (SQLite, no Elasticsearch)"),
    "annotate stop": Command("align.annotate.stop", "stop the local Argilla server"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_guarded(lambda: dispatch(argv))


def run_guarded(action, interrupted_hint: str = "") -> int:
    """Run `action` with align's logging and its exit codes (also used by recipes)."""
    setup_logging()
    handle_termination()
    try:
        return action()
    except AlignError as exc:
        print(f"align: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"align: interrupted; no run directory was left half-written{interrupted_hint}", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected failure")
        return 1


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from align import __version__

        print(f"align {__version__}")
        return 0
    if argv[0] == "stages":
        for name, cmd in COMMANDS.items():
            print(f"{name:<18} {cmd.summary}")
        return 0
    if argv[0] == "lineage":
        return lineage_command(argv[1:])
    if argv[0] == "loop":  # its own flags (--until, --allow-config-change) and `align loop status`
        from align.loop.run import main as loop_main

        return loop_main(argv[1:])
    if argv[0] in command_groups() and (len(argv) == 1 or argv[1] in ("-h", "--help", "help")):
        print(group_usage(argv[0]))
        return 0
    name, rest = match_command(argv)
    return stage_command(name, COMMANDS[name], rest)


def match_command(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv[0] in COMMANDS:
        return argv[0], argv[1:]
    if argv[0] in command_groups():
        subs = sorted(n.split()[1] for n in COMMANDS if n.startswith(argv[0] + " "))
        raise AlignError(f"unknown subcommand '{argv[0]} {argv[1]}'{nearest(argv[1], subs)}: one of {', '.join(subs)}")
    names = sorted({n.split()[0] for n in COMMANDS} | {"stages", "lineage", "loop"})
    raise AlignError(f"unknown command '{argv[0]}'{nearest(argv[0], names)}; run `align stages` to list them")


def command_groups() -> set[str]:
    """Commands with subcommands (`annotate`, `evaluate`)."""
    return {n.split()[0] for n in COMMANDS if " " in n}


def group_usage(group: str) -> str:
    lines = "\n".join(f"  {n:<18} {c.summary}" for n, c in COMMANDS.items() if n.startswith(group + " "))
    return (
        f"usage: align {group} <subcommand> [--config FILE] [key=value ...]\n\nsubcommands:\n{lines}\n\n"
        f"`align {group} <subcommand> --help` lists its config keys."
    )


def stage_command(name: str, cmd: Command, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"align {name}", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--config", "-c", help="YAML config file (see configs/)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, read and count the inputs (no model weights loaded), and exit",
    )
    for key in cmd.positional:
        parser.add_argument(key, nargs="?", help=f"sets `{key}`")
    for key in cmd.options:
        parser.add_argument(f"--{key}", help=f"sets `{key}`")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args, unknown = parser.parse_known_intermixed_args(argv)  # options may follow the positional
    if unknown:
        raise AlignError(f"unknown option(s) for `align {name}`: {' '.join(unknown)} (overrides are key=value)")
    module = importlib.import_module(cmd.module)
    if args.help:
        print(stage_help(name, cmd, module))
        return 0
    from align.core.config import dump_yaml, load_config

    overrides = list(args.overrides)
    if cmd.many and cmd.positional:
        # Values after the list positional that are not key=value belong to it.
        key, first = cmd.positional[-1], getattr(args, cmd.positional[-1])
        if first is not None and "=" not in first:
            values = [first] + [o for o in overrides if "=" not in o]
            overrides = [f"{key}={json.dumps(values)}"] + [o for o in overrides if "=" in o]
            setattr(args, key, None)
    for key in cmd.positional:
        value = getattr(args, key)
        if value is not None:
            if "=" in value:  # argparse gave an override to the optional positional
                overrides.insert(0, value)
            else:
                overrides.insert(0, f"{key}={json.dumps(value) if key in cmd.text else value}")
    for key in cmd.options:
        if getattr(args, key) is not None:
            value = getattr(args, key)
            overrides.insert(0, f"{key}={json.dumps(value) if key in cmd.text else value}")
    cfg = load_config(module.Config, args.config, overrides)
    if args.dry_run:
        if hasattr(module, "dry_run"):  # a stage whose dry run previews its effect (align redact)
            return module.dry_run(cfg)
        print(dump_yaml(cfg), end="")
        # Before the inputs are read, so the estimate shows even when reading them fails (no weights needed).
        from align.memory import dry_run_report

        print(dry_run_report(name, cfg, getattr(module, "DEFAULT_TRAINING", {})), end="")
        # Reading the inputs is the point of a dry run: a missing or broken data file fails here (exit 2).
        check = getattr(module, "check", None)
        if check is not None:
            import yaml

            from align.models import without_weights

            with without_weights():  # a hub model: its config and tokenizer, not gigabytes of weights
                counts = json.loads(json.dumps(check(cfg), default=str))
            print("# inputs, read and counted (no model weights loaded, nothing sent):")
            print(yaml.safe_dump({"inputs": counts}, sort_keys=False, allow_unicode=True), end="")
        return 0
    manifest = module.run(cfg)
    print_summary(name, manifest)
    return 0


def stage_help(name: str, cmd: Command, module) -> str:
    from align.core.config import describe

    doc = (module.__doc__ or cmd.summary).strip()
    pos = " ".join([*(k.upper() for k in cmd.positional), *(f"[--{k} {k.upper()}]" for k in cmd.options)])
    keys = "\n".join("  " + line for line in describe(module.Config))
    return (
        f"usage: align {name} [--config FILE] {pos + ' ' if pos else ''}[key=value ...] [--dry-run]\n\n"
        f"{doc}\n\nconfig keys (YAML or dotted key=value overrides):\n{keys}"
    )


def lineage_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="align lineage", description="print a run's chain back to its base model and data"
    )
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--json", action="store_true", help="print the full manifest chain as JSON")
    args = parser.parse_args(argv)
    from align.core import runs

    if args.json:
        print(json.dumps(runs.read_manifest(args.run), indent=2))
    else:
        print("\n".join(runs.lineage(args.run)))
    return 0


def print_summary(name: str, manifest: dict) -> None:
    """The run's path and headline metrics, printed once: by the main process of a multi-process launch."""
    from align.core.distributed import is_main_process

    if not isinstance(manifest, dict) or "path" not in manifest or not is_main_process():
        return
    print(f"{name}: run written to {manifest['path']} ({manifest.get('wall_time_s', 0):.0f} s)")
    metrics = manifest.get("metrics") or {}
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    # Held-out figures first: they are what the run is judged by.
    keys = sorted(shown, key=lambda k: (not k.startswith(("test_", "rm_", "accuracy", "mean_margin")), k))
    for key in keys[:14]:
        value = shown[key]
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")


# `align --help` headings: the stage kinds (align.stages.KINDS), then the commands of other packages.
PACKAGE_KINDS = {"align.feedback": "serving and feedback", "align.annotate": "annotation"}


def command_kind(cmd: Command) -> str:
    """The heading `align --help` lists `cmd` under."""
    from align.stages import kind_of

    package = cmd.module.rpartition(".")[0]
    kind = kind_of(cmd.module) if package == "align.stages" else PACKAGE_KINDS.get(package)
    return kind or "other"


def usage() -> str:
    from align.stages import KINDS

    kinds = [*KINDS, *PACKAGE_KINDS.values(), "other"]
    by_kind = {k: [(n, c) for n, c in COMMANDS.items() if command_kind(c) == k] for k in dict.fromkeys(kinds)}
    lines = "\n".join(
        f"{kind}:\n" + "\n".join(f"  {n:<18} {c.summary}" for n, c in commands) + "\n"
        for kind, commands in by_kind.items()
        if commands
    )
    return textwrap.dedent(
        """\
        usage: align <command> [--config FILE] [key=value ...]

        {lines}
        the loop and lineage:
          loop               the feedback loop: rounds of generate, label, train, evaluate, gate
          loop status DIR    where a loop stands
          stages             list the stage commands
          lineage RUN        the chain of runs, models and data behind RUN

        Every stage writes one run directory with manifest.json; `align <command> --help` lists its config keys.
        Exit codes: 0 done, 2 bad input or config, 1 unexpected failure; `align loop`: 3 when its last round was held back by a gate."""
    ).replace("{lines}", lines.strip() + "\n")


def handle_termination() -> None:
    """SIGTERM (a scheduler, `kill`, CI timeout) unwinds like Ctrl-C, so partial runs are removed."""
    import signal

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def setup_logging() -> None:
    level = os.environ.get("ALIGN_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[align %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("align")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries speak through warnings we have already handled (e.g. a fresh score head).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
