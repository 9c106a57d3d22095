"""`align loop --config recipes/<name>/loop.yaml`: rounds of generate -> label -> train -> evaluate -> gate.

Round 0 evaluates the starting policy (with `sft`, the warm start against the base; gates with
`against: start` decide whether the rounds start from the warm start or, held back, from the base). Each
round after it:

    prompts     (with `mix`) the round's prompts, each kind's share drawn afresh (align/loop/mix.py)
    generate    the current policy answers the recipe's training prompts (`align generate`, vLLM when installed),
                with a seed of its own each round (fresh samples, also after a held-back round)
    score       the newest reward model scores the candidates (when the loop has one)
    pairs       candidate pairs for annotators (least_sure when scored, else random)
    push        one Argilla dataset per round: <recipe>-<loop id>-r<round>
    simulate    simulated annotators answer (annotators: simulated; demos, tests and CI only); with `mix`,
                one run per kind, each with that kind's judge
    wait        poll Argilla until `wait.min_records` records are complete, or `wait.deadline_minutes`
    pull        the labels, journaled before anything else (`align annotate pull`)
    labels      the pairs the round trains on: this round's labels or every round's so far
    reward/dpo/ppo   the recipe's training stages, on those labels
    evaluate    `align evaluate policy`: the new policy against the current one on held-out prompts
    versus_start  (with gates `against: start`) the new policy against the loop's starting model, from both
                models' judged replies (align/loop/versus_start.py)
    retention   (with a `retention` section) `align evaluate retention`: what the new policy lost against
                the starting policy's base model (IFEval, drift), so losses add up across rounds
    gate        the recipe's gates and its retention_gates; all hold: the new policy becomes current
                (promoted); else it is held back, the current policy stays, and the report and exit status
                say which gates failed

Every step except wait and gate writes an ordinary run directory (`<loop_dir>/round-<n>/<step>`) with
its manifest, so `align lineage` walks from any policy through the rounds, label pulls, data files
and base model. The loop's state (`loop.json`, align/loop/state.py) is written before and after every
step; run the same command again after a kill -9, a crash, a reboot or `--until labels`, and it goes
on from the last finished step: finished steps are not redone (their run directories say they are
done), a push is never repeated (push sends only records the dataset lacks), labels are journaled by
the pull, and no step is skipped. report.html is rewritten after every round.

The newest reward model always becomes the loop's reward model (it is trained on people's labels and
judged by its own held-out accuracy); the policy advances only through the gates.

Exit status: 0 when the last round was promoted (or the loop stopped on purpose, `--until labels`);
3 when it was held back by a gate (the failing gates are printed); 2 bad config, input or a changed
loop; 1 a service that stayed down (the state is intact: run the command again to continue).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import logging
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.config import load_config, to_dict
from align.core.errors import AlignError
from align.loop.config import (
    LoopConfig,
    config_files,
    loop_changes,
    resolve_dir,
    retention_baseline,
    round_generate_wiring,
    stage_config,
)
from align.loop.feedback import import_if_file, kto_wiring, write_round_data
from align.loop.gates import GateResult, evaluate_gates, split_gates
from align.loop.labels import since_start, usable_pairs, write_labels_run
from align.loop.mix import kinds_of, write_round_prompts
from align.loop.preflight import load_retention_gates, preflight
from align.loop.state import LoopState
from align.loop.versus_start import StartMismatch, write_versus_start_run
from align.loop.wait import wait_for_labels
from align.stages.evaluate_policy import ReuseRefused

log = logging.getLogger(__name__)

HELD_BACK = 3
LOCK = ".lock"


class Stopped(Exception):
    """The loop stopped on purpose (e.g. --until labels); the state says where."""


# -- the command --------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`align loop ...` and `align loop status LOOP_DIR` (called by align.cli)."""
    if argv and argv[0] == "status":
        parser = argparse.ArgumentParser(prog="align loop status", description="where a loop stands")
        parser.add_argument("loop_dir")
        parser.add_argument("--json", action="store_true", help="print the state file as JSON")
        args = parser.parse_args(argv[1:])
        from align.loop.summary import status

        return status(Path(args.loop_dir), args.json)
    parser = argparse.ArgumentParser(prog="align loop", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--config", "-c", help="the loop's YAML (e.g. recipes/brand_voice/loop.yaml)")
    parser.add_argument(
        "--until",
        choices=["labels"],
        help="labels: stop after pushing a round's candidates (label for days, then run again)",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="continue a loop whose config changed since it started (the change is recorded)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        raise AlignError(f"unknown option(s) for `align loop`: {' '.join(unknown)} (overrides are key=value)")
    if args.help:
        from align.core.config import describe

        print(
            "usage: align loop --config FILE [--until labels] [--allow-config-change] [key=value ...]\n"
            "       align loop status LOOP_DIR\n\n"
            + (__doc__ or "").strip()
            + "\n\nconfig keys:\n"
            + "\n".join("  " + line for line in describe(LoopConfig))
        )
        return 0
    if not args.config:
        raise AlignError("`align loop` needs --config: a loop YAML such as recipes/brand_voice/loop.yaml")
    cfg = load_config(LoopConfig, args.config, args.overrides)
    return run(cfg, until=args.until, allow_config_change=args.allow_config_change)


def run(cfg: LoopConfig, until: str | None = None, allow_config_change: bool = False) -> int:
    loop = Loop(cfg, until, allow_config_change)
    try:
        loop.go()
    except Stopped as stop:
        print(str(stop))
        return 0
    finally:
        loop.release()
    return loop.finish()


# -- the loop ---------------------------------------------------------------------------------------


class Loop:
    def __init__(self, cfg: LoopConfig, until: str | None, allow_config_change: bool):
        self.cfg = cfg
        self.until = until
        self.dir = resolve_dir(cfg)
        self.specs, self.sets = preflight(cfg)  # everything checkable, before any directory is made
        self.previous_specs, self.start_specs = split_gates(self.specs)
        self.retention_specs = load_retention_gates(cfg) if cfg.retention_gates else []
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlignError(f"another `align loop` is running in {self.dir}; wait for it or stop it first") from None
        try:
            self.state = self._open_state(allow_config_change)
        except BaseException:
            self.release()  # a refused loop (another recipe, a changed config) holds no lock
            raise

    def release(self) -> None:
        self._lock.close()

    def _open_state(self, allow_config_change: bool) -> LoopState:
        config = runs.scrub_secrets(to_dict(self.cfg))
        files = {f: runs.hash_file(f) for f in config_files(self.cfg)}
        state = LoopState.load(self.dir)
        if state is None:
            if any(p.name != LOCK for p in self.dir.iterdir()):
                raise AlignError(f"{self.dir} is not empty and holds no loop (no loop.json); give a new loop_dir")
            state = LoopState(
                self.dir,
                {
                    "version": 1,
                    "recipe": self.cfg.recipe,
                    "loop_id": secrets.token_hex(3),
                    "created": _now(),
                    "config": config,
                    "files": files,
                    "config_changes": [],
                    "phase": "running",
                    "current": {
                        "policy": self.cfg.policy,
                        "evaluation": None,
                        "reward_model": self.cfg.reward_model,
                        "round": 0,
                    },
                    "rounds": [],
                },
            )
            state.save()
            log.info("loop %s: new loop in %s", state.data["loop_id"], self.dir)
            return state
        if state.data["recipe"] != self.cfg.recipe:
            raise AlignError(
                f"{self.dir} holds a loop of recipe '{state.data['recipe']}', not '{self.cfg.recipe}'; "
                "give another loop_dir"
            )
        changes, free = loop_changes(state.data["config"], state.data["files"], config, files)
        if changes and not allow_config_change:
            raise AlignError(
                f"the loop in {self.dir} was started with a different config: {'; '.join(changes)}; "
                "run it with the config it started with, or pass --allow-config-change to go on "
                "with the new one (recorded in loop.json and the report)"
            )
        changes = free + changes
        if changes:
            state.data["config_changes"].append({"at": _now(), "before_round": len(state.rounds), "changes": changes})
            state.data.update(config=config, files=files)
            log.warning("loop config changed (recorded): %s", "; ".join(changes))
        state.data["phase"] = "running"
        state.save()
        log.info("loop %s: continuing in %s", state.data["loop_id"], self.dir)
        return state

    # -- rounds -------------------------------------------------------------------------------------
    def go(self) -> None:
        self.round_zero()
        for n in range(1, self.cfg.rounds + 1):
            rnd = self.state.round(n)
            if rnd.get("decided"):
                continue
            self.round(n, rnd)
            self.write_report()
        self.state.data["phase"] = "finished"
        self.state.save()

    def round_zero(self) -> None:
        rnd = self.state.round(0)
        if rnd.get("decided"):
            return
        start = self.cfg.policy
        wiring = {"policy": start, "baseline": start, "runs_dir": str(self.round_dir(0)), "name": "evaluate"}
        if self.cfg.sft:
            # The warm start: the rounds sample from the SFT policy, and round 0 measures what SFT alone did
            # against the base (a style SFT can cost refusals: the report shows it before any round runs).
            start = self.step(
                rnd, "sft", "sft", {"model": self.cfg.policy, "runs_dir": str(self.round_dir(0)), "name": "sft"}
            )["path"]
            self.state.current["policy"] = self.state.rel(start)
            wiring["policy"] = start
        if self.cfg.reward_model and "reward_model" not in self.cfg.evaluate:
            wiring["reward_model"] = self.cfg.reward_model
        manifest = self.step(rnd, "evaluate", "evaluate", wiring)
        if self.cfg.retention and self.cfg.sft:
            # Only a warm start makes round 0's policy differ from the retention baseline; without one the
            # starting policy is that baseline (zero differences by construction), and every round's
            # retention run already holds its scores as the baseline's.
            self.retention(rnd, start)
        self.state.current["evaluation"] = self.state.rel(manifest["path"])
        rnd.update(
            policy=self.state.rel(start),
            reasons=["starting policy (SFT warm start)" if self.cfg.sft else "starting policy"],
        )
        if self.cfg.sft and self.start_specs:
            # The warm start is a candidate like any round's: gates against the starting model decide whether the
            # rounds start from it. Held back, they start from `policy` itself, and the report says why.
            gates = evaluate_gates(self.start_specs, self.versus_start(rnd, manifest))
            rnd.update(
                promoted=gates.passed,
                gates=gates.as_dict(),
                reasons=(
                    [f"SFT warm start: all {len(gates.gates)} gates against the starting model held"]
                    if gates.passed
                    else ["SFT warm start held back; the rounds start from " + self.cfg.policy, *gates.reasons]
                ),
            )
            if not gates.passed:
                self.state.current["policy"] = self.cfg.policy
                log.warning(
                    "round 0: the SFT warm start is held back; the rounds start from %s: %s",
                    self.cfg.policy,
                    "; ".join(gates.reasons),
                )
        rnd["decided"] = True
        self.state.save()
        self.write_report()

    def round(self, n: int, rnd: dict[str, Any]) -> None:
        cfg, state = self.cfg, self.state
        rd = str(self.round_dir(n))
        policy = state.abs(state.current["policy"])
        reward_model = state.abs(state.current.get("reward_model"))
        rnd["starts_from"] = state.current["policy"]
        log.info("=== round %d of %d: policy %s ===", n, cfg.rounds, policy)

        feedback_only = cfg.feedback.applies(n) and cfg.feedback.use == "instead"
        labels = None
        if not feedback_only:  # generated candidates, labelled by annotators
            wiring = {"policy": policy, "runs_dir": rd, "name": "generate"}
            if cfg.mix.on:
                # This round's prompts, each kind's share drawn afresh (align/loop/mix.py); generate reads the run.
                wiring["prompts"] = self._step(rnd, "prompts", lambda: write_round_prompts(cfg.mix, n, rd))["path"]
                wiring["max_prompts"] = None  # the mix's count, not the generate config file's
            wiring = round_generate_wiring(cfg.generate, wiring, n)
            candidates = self.step(rnd, "generate", "generate", wiring)
            scored = False
            # dpo_margin: the current policy's log-ratios against the reference it was trained with (align score).
            margins = (
                {"policy": policy, "reference": dpo_reference(policy)}
                if cfg.pairs.get("selection") == "dpo_margin"
                else {}
            )
            if reward_model or margins:
                candidates = self.step(
                    rnd,
                    "score",
                    "score",
                    {
                        "generations": candidates["path"],
                        **margins,
                        **({"reward_model": reward_model} if reward_model else {}),
                        "runs_dir": rd,
                        "name": "score",
                    },
                )
                scored = bool(reward_model)
            pairs_wiring = {"generations": candidates["path"], "runs_dir": rd, "name": "pairs"}
            if "selection" not in cfg.pairs:
                pairs_wiring["selection"] = "least_sure" if scored else "random"
            pairs = self.step(rnd, "pairs", "pairs", pairs_wiring)
            dataset = rnd.setdefault("dataset", f"{cfg.recipe}-{state.data['loop_id']}-r{n}")
            argilla = to_dict(cfg.argilla)
            # push keeps the A/B order and gold answers in the journal pull reads: the same journal_dir.
            push = self.step(
                rnd,
                "push",
                "push",
                {
                    "pairs": pairs["path"],
                    "dataset": dataset,
                    "round": n,
                    "argilla": argilla,
                    "runs_dir": rd,
                    "name": "push",
                    "journal_dir": self.journal_dir(),
                },
            )
            if self.until == "labels" and rnd["steps"].get("wait", {}).get("status") != "done":
                state.data["phase"] = "waiting_for_labels"
                state.save()
                raise Stopped(
                    f"round {n}: {push['metrics'].get('records', '?')} records in Argilla dataset '{dataset}' "
                    f"wait for annotators; see `align loop status {self.dir}`, and run the same `align loop` "
                    "command again to go on once they are labelled"
                )
            if cfg.annotators == "simulated":
                self.simulate(
                    rnd, {"dataset": dataset, "argilla": argilla, "runs_dir": rd, "journal_dir": self.journal_dir()}
                )
            wait_for_labels(self, rnd, dataset)
            pull = self.step(
                rnd,
                "pull",
                "pull",
                {
                    "dataset": dataset,
                    "argilla": argilla,
                    "runs_dir": rd,
                    "name": "pull",
                    "journal_dir": self.journal_dir(),
                },
            )
            labels = self.labels(n, rnd, pull)
        if cfg.feedback.applies(n):
            labels = self.feedback(n, rnd, labels)
        usable = usable_pairs(labels["path"])
        if usable < cfg.train.min_pairs:
            return self.decide(
                n,
                rnd,
                None,
                None,
                [
                    f"only {usable} usable labelled pair(s) to train on "
                    f"(train.min_pairs={cfg.train.min_pairs}): label more and add a round"
                ],
            )

        candidate, new_reward = None, None
        for stage in cfg.train.stages:
            wiring: dict[str, Any] = {"runs_dir": rd, "name": stage}
            if stage == "reward":
                wiring["data.train"] = labels["path"]
                if "model" not in cfg.reward:
                    wiring["model"] = self.start_policy()
                new_reward = self.step(rnd, stage, stage, wiring)["path"]
            elif stage == "dpo":
                wiring.update({"model": policy, "data.train": labels["path"]})
                if cfg.train.reference == "start" and policy != self.start_policy():
                    wiring["reference"] = self.start_policy()
                candidate = self.step(rnd, stage, stage, wiring)["path"]
            elif stage == "kto":  # on feedback (align/loop/feedback.py), weights balanced from the round's counts
                wiring.update({"model": policy, "data.train": labels["path"], **kto_wiring(labels, cfg.kto)})
                candidate = self.step(rnd, stage, stage, wiring)["path"]
            else:  # ppo / rloo / grpo: online, from the newest reward model
                wiring.update({"model": policy, "reward_model": new_reward or reward_model})
                candidate = self.step(rnd, stage, stage, wiring)["path"]
        rnd["policy"] = state.rel(candidate)

        newest_reward = new_reward or reward_model
        wiring = {
            "policy": candidate,
            "baseline": policy,
            "baseline_replies": state.abs(state.current["evaluation"]),
            "runs_dir": rd,
            "name": "evaluate",
        }
        if newest_reward and "reward_model" not in cfg.evaluate:
            wiring["reward_model"] = newest_reward
        try:
            evaluation = self.step(rnd, "evaluate", "evaluate", wiring)
        except ReuseRefused as why:
            # The evaluation settings changed since the current policy was evaluated (--allow-config-change):
            # its replies cannot stand for it, so both models answer (checked before any run directory exists).
            log.info("round %d: generating the baseline's replies again: %s", n, why)
            wiring["baseline_replies"] = None
            rnd["steps"].pop("evaluate", None)  # refused before it ran: not a step to report as interrupted
            evaluation = self.step(rnd, "evaluate", "evaluate", wiring)
        rnd["since_start"] = since_start(state.abs(state.rounds[0]["steps"]["evaluate"]["run"]), evaluation["path"])
        gates = evaluate_gates(self.previous_specs, evaluation)
        if self.start_specs:
            gates = GateResult(gates.gates + evaluate_gates(self.start_specs, self.versus_start(rnd, evaluation)).gates)
        if cfg.retention:
            # Run whatever the policy gates said: a held-back round's report then names every gate that must
            # change, not only the first set that failed.
            kept = self.retention(rnd, candidate)
            if self.retention_specs:
                gates = GateResult(gates.gates + evaluate_gates(self.retention_specs, kept).gates)
        self.decide(n, rnd, candidate, evaluation, gates.reasons if not gates.passed else [], gates, new_reward)

    def decide(
        self,
        n: int,
        rnd: dict[str, Any],
        candidate: str | None,
        evaluation: dict | None,
        failures: list[str],
        gates: GateResult | None = None,
        new_reward: str | None = None,
    ) -> None:
        state = self.state
        promoted = candidate is not None and not failures
        rnd.update(
            promoted=promoted,
            decided=True,
            decided_at=_now(),
            gates=gates.as_dict() if gates is not None else None,
            reasons=[f"all {len(gates.gates)} gates held"] if promoted else failures,
        )
        if promoted:
            state.current.update(policy=state.rel(candidate), evaluation=state.rel(evaluation["path"]), round=n)
        if new_reward:
            state.current["reward_model"] = state.rel(new_reward)
        state.save()
        if promoted:
            log.info("round %d: promoted %s (%s)", n, candidate, rnd["reasons"][0])
        else:
            log.warning(
                "round %d: held back; the current policy stays %s: %s",
                n,
                state.abs(state.current["policy"]),
                "; ".join(failures),
            )

    def simulate(self, rnd: dict[str, Any], wiring: dict[str, Any]) -> None:
        """Simulated annotators answer the round's dataset: one run, or with `mix` one per kind, each with its judge
        (the `simulate` section plus the kind's overrides) on the records of its kind only."""
        if not self.cfg.mix.on:
            self.step(rnd, "simulate", "simulate", {**wiring, "name": "simulate"})
            return
        prompts = self.state.abs(rnd["steps"]["prompts"]["run"])
        file = runs.output_path(prompts, runs.read_manifest(prompts), "prompts")
        for kind in self.cfg.mix.kinds:
            name = f"simulate_{kind.kind}"
            config = stage_config(
                "simulate",
                {**self.cfg.simulate, **kind.simulate},
                {**wiring, "name": name, "only.paths": [str(file)], "only.match": {"kind": kind.kind}},
            )
            self._step(rnd, name, lambda config=config: _stage_run("simulate", config))

    def versus_start(self, rnd: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
        """The round's policy against the loop's starting model (align/loop/versus_start.py): its replies in
        `evaluation` paired with the starting model's in round 0's; when the evaluation settings changed since
        round 0, the starting model answers again with the current ones (step evaluate_start)."""
        rd = self.round_dir(rnd["round"])
        start_eval = self.state.abs(self.state.rounds[0]["steps"]["evaluate"]["run"])

        def make() -> dict[str, Any]:
            try:
                return write_versus_start_run(evaluation["path"], start_eval, rd)
            except StartMismatch as why:
                log.info("round %d: evaluating the starting model again: %s", rnd["round"], why)
                fresh = self.step(
                    rnd,
                    "evaluate_start",
                    "evaluate",
                    {
                        "policy": self.cfg.policy,
                        "baseline": self.cfg.policy,
                        "runs_dir": str(rd),
                        "name": "evaluate_start",
                    },
                )
                return write_versus_start_run(evaluation["path"], fresh["path"], rd)

        return self._step(rnd, "versus_start", make)

    def retention(self, rnd: dict[str, Any], policy: str) -> dict[str, Any]:
        """`align evaluate retention` of `policy` against the base model the loop started from."""
        return self.step(
            rnd,
            "retention",
            "retention",
            {
                "policy": policy,
                "baseline": retention_baseline(self.cfg),
                "runs_dir": str(self.round_dir(rnd["round"])),
                "name": "retention",
            },
        )

    # -- steps --------------------------------------------------------------------------------------
    def step(self, rnd: dict[str, Any], name: str, section: str, wiring: dict[str, Any]) -> dict[str, Any]:
        """Run step `name` of a round once, recording it before and after; a finished step is read back."""
        return self._step(
            rnd, name, lambda: _stage_run(section, stage_config(section, getattr(self.cfg, section), wiring))
        )

    def _step(self, rnd: dict[str, Any], name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        record = rnd["steps"].get(name)
        path = self.round_dir(rnd["round"]) / name
        if record and record.get("status") == "done":
            return runs.read_manifest(self.state.abs(record["run"]))
        if runs.is_run(path):
            # Finished, but killed before loop.json said so: the run directory is the proof.
            manifest = runs.read_manifest(path)
            rnd["steps"][name] = {
                "status": "done",
                "run": self.state.rel(path),
                "wall_time_s": manifest.get("wall_time_s"),
                "finished": manifest.get("created"),
                "recovered": True,
            }
            self.state.save()
            log.info("round %d, %s: already complete in %s", rnd["round"], name, path)
            return manifest
        rerun = bool(record)
        rnd["steps"][name] = {"status": "started", "started": _now(), "attempts": (record or {}).get("attempts", 0) + 1}
        self.state.save()
        if rerun:
            log.info("round %d, %s: started before but did not finish; running it again", rnd["round"], name)
        start = time.time()
        manifest = make()
        rnd["steps"][name].update(
            status="done",
            run=self.state.rel(manifest["path"]),
            wall_time_s=round(time.time() - start, 1),
            finished=_now(),
        )
        self.state.save()
        return manifest

    def labels(self, n: int, rnd: dict[str, Any], pull: dict[str, Any]) -> dict[str, Any]:
        rounds = range(1, n + 1) if self.cfg.train.labels == "all" else [n]
        pulls, pushes = [], []
        for k in rounds:
            steps = self.state.round(k)["steps"]
            if steps.get("pull", {}).get("status") != "done":
                continue  # a round that ended before its pull (none today) has no labels to add
            pulls.append((k, self.state.abs(steps["pull"]["run"])))
            pushes.append((k, self.state.abs(steps["push"]["run"])))
        kinds = {
            k: kinds_of(self.state.abs(self.state.round(k)["steps"]["prompts"]["run"]))
            for k, _ in pulls
            if self.state.round(k)["steps"].get("prompts", {}).get("status") == "done"
        }
        config = {"rounds": list(rounds), "labels": self.cfg.train.labels, "balance": self.cfg.train.balance}
        return self._step(
            rnd,
            "labels",
            lambda: write_labels_run(
                pulls, pushes, self.round_dir(n), "labels", config, balance=self.cfg.train.balance, kinds=kinds
            ),
        )

    def feedback(self, n: int, rnd: dict[str, Any], labels: dict[str, Any] | None) -> dict[str, Any]:
        """The round's training data with the feedback from deployment (align/loop/feedback.py): a `loop feedback`
        run from this round's labels (None: feedback instead of them) and the feedback run (a file is imported first)."""
        source = self.cfg.feedback.source
        if not runs.is_run(source):
            source = self._step(rnd, "feedback_import", lambda: import_if_file(source, self.round_dir(n)))["path"]
        return self._step(
            rnd,
            "feedback",
            lambda: write_round_data(self.cfg.feedback, source, labels["path"] if labels else None, self.round_dir(n)),
        )

    # -- paths, report, summary ---------------------------------------------------------------------
    def start_policy(self) -> str:
        """The policy round 1 started from: the SFT warm start when the loop has one and its gates held, else `policy`."""
        zero = self.state.rounds[0]
        return self.cfg.policy if zero.get("promoted") is False else self.state.abs(zero["policy"])

    def round_dir(self, n: int) -> Path:
        return self.dir / f"round-{n}"

    def journal_dir(self) -> str:
        # pull's default (one journal and one registry of simulated users per server on this machine) unless
        # the pull section names one: simulate and pull must share it, and a second loop against the same
        # server must know the simulated users the first one made.
        return self.cfg.pull.get("journal_dir") or ""

    def write_report(self) -> Path:
        from align.loop.report import REPORT, write_report
        from align.loop.summary import loop_info, round_summaries

        return write_report(self.dir / REPORT, round_summaries(self.state), loop_info(self.state, self.cfg))

    def finish(self) -> int:
        from align.loop.report import REPORT
        from align.loop.summary import score_table

        report = self.write_report()
        print(f"\nLoop {self.dir} ({self.cfg.recipe}): {len(self.state.rounds) - 1} round(s)")
        print(score_table(self.state))
        steps = sum(float(v.get("wall_time_s") or 0) for r in self.state.rounds for v in r["steps"].values())
        print(f"Wall time of the loop's steps: {steps / 60:.1f} min (waiting for labels included)")
        print(f"Report: {report.resolve()}")
        print(
            f"Current policy: {self.state.abs(self.state.current['policy'])}  "
            f"(lineage: align lineage {self.state.abs(self.state.current['policy'])})"
        )
        last = self.state.rounds[-1]
        if last["round"] > 0 and not last.get("promoted"):
            print(f"align loop: round {last['round']} was held back: {'; '.join(last['reasons'])}", file=sys.stderr)
            return HELD_BACK
        assert (self.dir / REPORT).exists()
        return 0


def dpo_reference(policy: str) -> str:
    """The reference a DPO run trained against (its `reference`, else its starting `model`, whose LoRA adapter
    DPO disabled); a policy no DPO run made is its own reference (every margin 0: dpo_margin pairs at random)."""
    if not runs.is_run(policy):
        return policy
    manifest = runs.read_manifest(policy)
    if manifest.get("stage") != "dpo":
        return policy
    return manifest["config"].get("reference") or manifest["config"]["model"]


def _stage_run(section: str, config) -> dict[str, Any]:
    import importlib

    from align.loop.config import STAGE_MODULES

    log.info("--- %s ---", section)
    return importlib.import_module(STAGE_MODULES[section]).run(config)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
