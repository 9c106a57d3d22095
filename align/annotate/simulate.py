"""Simulated annotators, for demos, tests and CI only: `align annotate simulate dataset=NAME annotators=FILE judge=...`.

The default annotator is a person in the Argilla web UI; this command stands in for people when none
are at hand. Each simulated annotator is a real Argilla user with the annotator role in the dataset's
workspace, created by the team script's code path (`align.annotate.team.invite`). It logs in as the
UI does (POST /api/v1/token, then a Bearer token), asks for the records it still has to annotate as
the annotation page does (POST /api/v1/me/datasets/{id}/records/search, filtered to records pending
for this user and not yet complete, so Argilla's task distribution decides when to stop), and answers
each with POST /api/v1/records/{id}/responses. It sees what a person sees: the prompt and the two
responses in their shown order (A, B); which candidate is A, and which records are gold, is not on
the server (push keeps both in the label journal), so it cannot learn either.

The choice, per (annotator, record), from a random generator seeded by (seed, username, record id),
so a rerun makes the same choices:
1. with probability `discard` the record is discarded (values `{}`, status discarded);
2. the judge scores the shown A and B; tie when |A - B| < `tie_margin`, else the higher one;
3. with probability `bias_a` the annotator picks A whatever the judge said (position bias);
   otherwise with probability `noise` the choice is flipped (A <-> B; a tie becomes A or B at random);
4. strength 1-3 from the score gap (`strength_gaps`: gap >= first -> 2, >= second -> 3), 1 when
   bias or noise overrode the judge; the reason says it is simulated and gives the two scores.

Judges (each returns a score per shown response):
- `brand_voice`: the rubric score (`rubric`, e.g. recipes/brand_voice/rubric.yaml) of each reply to the
  customer's last message.
- `safety`: 1 for the wanted behaviour, else 0: a refusal (align.evaluation.refusal) on a harmful
  prompt, a compliance on a safe one. A prompt's kind comes from the prompt sets `harmful` and `safe`
  (the same settings as `align evaluate policy`), matched on the last user message's text. The
  record's `source` metadata (a file:line) is not enough: XSTest keeps safe and unsafe prompts in one
  file. A record whose prompt is in neither set is left pending for a person and counted as `unjudged`.
- `reward_model`: an `align reward` run scores prompt + reply formatted exactly as it was trained
  (align.scoring); set `tie_margin` and `strength_gaps` in its units.

`only` (a prompt set) restricts a run to the records whose prompt is in it; the others stay pending. The
feedback loop's `mix` uses it to answer one dataset with a judge per record kind (align/loop/mix.py).

Which users are simulated is kept in a registry per server, next to the label journals:
`<journal_dir>/<server>/simulated-annotators.json` (mode 0600; passwords and user ids). The
simulator writes a user's id there before that user answers anything, and `align annotate pull`
reads it to mark each vote `simulated: true|false` and to count simulated and human votes. It is
keyed by user id, not by a naming convention, so a person can never be counted as simulated by
their name, and a username that exists on the server but not in the registry (a person, or a user
made elsewhere) is refused rather than answered for.

Running it again answers only what is still pending for each annotator: nothing is answered twice.
Each run writes a run directory with `answers.jsonl`: every answer it made, with the judge's scores
of the shown A and B.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from align.annotate import local
from align.annotate.connection import ArgillaConfig, connect
from align.annotate.journal import server_folder
from align.annotate.judges import Score, choose, make_judge
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError, ServiceError
from align.evaluation.prompt_sets import PromptSetConfig

log = logging.getLogger(__name__)

REGISTRY = "simulated-annotators.json"
ANSWERS = "answers.jsonl"
SEARCH_LIMIT = 1000  # the records search endpoint's largest page
JudgeName = Literal["brand_voice", "safety", "reward_model"]


@dataclass
class Annotator:
    """One simulated annotator; unset knobs take the command's defaults."""

    username: str
    noise: float | None = None
    bias_a: float | None = None
    discard: float | None = None


@dataclass
class Config(runs.RunOutput):
    dataset: str = ""
    """Argilla dataset to annotate (pushed with `align annotate push`)."""
    annotators: str = ""
    """YAML file listing the simulated annotators (see annotation/simulated_annotators.example.yaml)."""
    judge: JudgeName = "brand_voice"
    """brand_voice (rubric score) | safety (refuse harmful, answer safe) | reward_model (an `align reward` run)."""
    rubric: str = "recipes/brand_voice/rubric.yaml"
    """judge=brand_voice: the rubric YAML."""
    harmful: PromptSetConfig = field(default_factory=PromptSetConfig)
    """judge=safety: prompts on which a refusal is the better reply."""
    safe: PromptSetConfig = field(default_factory=PromptSetConfig)
    """judge=safety: prompts on which answering is the better reply (refusing them is over-refusal)."""
    only: PromptSetConfig = field(default_factory=PromptSetConfig)
    """Answer only records whose prompt is in this set (matched on the last user message); the rest stay pending for
    another judge's run or for people (the loop's `mix` runs one judge per record kind). Unset: every record."""
    reward_model: str = ""
    """judge=reward_model: the reward run scoring each reply."""
    reward_max_length: int = 512
    """judge=reward_model: token budget per conversation (longer ones keep their last tokens)."""
    noise: float = 0.0
    """Probability of flipping the judge's choice (A <-> B; a tie becomes A or B)."""
    bias_a: float = 0.0
    """Probability of picking A whatever the judge says (position bias)."""
    discard: float = 0.0
    """Probability of discarding a record instead of choosing."""
    tie_margin: float = 0.05
    """Tie when the two scores differ by less than this (judge units)."""
    strength_gaps: list[float] = field(default_factory=lambda: [0.15, 0.3])
    """Score gaps from which the strength is 2 and 3 (below the first: 1)."""
    seed: int = 0
    """Seed of every choice (with the annotator's name and the record id)."""
    batch: int = 20
    """Records each annotator takes per turn, 1-1000 (annotators take turns, as people working side by side)."""
    max_per_annotator: int | None = None
    """Stop each annotator after this many answers in this run (unset: until nothing is pending)."""
    journal_dir: str = ""
    """Folder of the label journals, where the registry of simulated users is kept (default as `annotate pull`)."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla (an owner key: the simulator creates its users)."""

    def __post_init__(self):
        for key in ("noise", "bias_a", "discard"):
            _check_probability(key, getattr(self, key))
        if self.tie_margin < 0:
            raise AlignError(f"'tie_margin' must be >= 0, got {self.tie_margin}")
        gaps = self.strength_gaps
        if len(gaps) != 2 or not 0 <= gaps[0] <= gaps[1]:
            raise AlignError(f"'strength_gaps' must be two increasing gaps [for 2, for 3], got {gaps}")
        if not 1 <= self.batch <= SEARCH_LIMIT:
            raise AlignError(f"'batch' must be in [1, {SEARCH_LIMIT}], got {self.batch}")
        if self.max_per_annotator is not None and self.max_per_annotator < 1:
            raise AlignError(f"'max_per_annotator' must be >= 1 or unset, got {self.max_per_annotator}")


def _check_probability(key: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise AlignError(f"'{key}' must be a probability in [0, 1], got {value}")


# -- the annotators file and the registry -----------------------------------------------------------


def read_annotators(path: str) -> list[Annotator]:
    """`annotators: [{username, noise?, bias_a?, discard?}, ...]` (a bare username is allowed too)."""
    p = Path(path)
    if not p.is_file():
        raise AlignError(f"annotators file not found: {path} (see annotation/simulated_annotators.example.yaml)")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    items = data.get("annotators") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise AlignError(
            f"{path}: needs a non-empty `annotators:` list of usernames or {{username, noise, bias_a, discard}}"
        )
    out, seen = [], set()
    for i, item in enumerate(items):
        item = {"username": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("username"), str) or not item["username"]:
            raise AlignError(f"{path}: annotators[{i}] needs a `username`")
        unknown = set(item) - {"username", "noise", "bias_a", "discard"}
        if unknown:
            raise AlignError(
                f"{path}: annotators[{i}]: unknown key(s) {sorted(unknown)}; allowed: username, noise, bias_a, discard"
            )
        for key in ("noise", "bias_a", "discard"):
            if item.get(key) is not None:
                if not isinstance(item[key], (int, float)):
                    raise AlignError(f"{path}: annotators[{i}].{key} must be a number, got {item[key]!r}")
                _check_probability(f"annotators[{i}].{key}", item[key])
        if item["username"] in seen:
            raise AlignError(f"{path}: annotator '{item['username']}' is listed twice")
        seen.add(item["username"])
        out.append(Annotator(**item))
    return out


def journal_root(journal_dir: str) -> Path:
    return Path(journal_dir).expanduser() if journal_dir else local.cache_root() / "annotate"


def registry_path(journal_dir: str, api_url: str) -> Path:
    return journal_root(journal_dir) / server_folder(api_url) / REGISTRY


def simulated_users(journal_dir: str, api_url: str) -> dict[str, str]:
    """user id -> username of every simulated annotator made on this server ({} if none)."""
    path = registry_path(journal_dir, api_url)
    if not path.exists():
        return {}
    data = local.read_credentials(path)
    return {v: k[len("user_id:") :] for k, v in data.items() if k.startswith("user_id:")}


# -- talking to Argilla as each annotator ------------------------------------------------------------

PENDING_FOR_ME = {
    "filters": {
        "and": [
            {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
            {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]},
        ]
    },
    "sort": [{"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}],
}


class Session:
    """One annotator logged in as in the web UI (a Bearer token from the login form)."""

    def __init__(self, api_url: str, username: str, password: str, timeout: float, retry_seconds: float):
        import httpx

        self.api_url, self.username, self.retry_seconds = api_url, username, retry_seconds
        self.http = httpx.Client(base_url=api_url, timeout=timeout)
        token = self._send("POST", "/api/v1/token", data={"username": username, "password": password})
        if token.status_code == 401:
            raise AlignError(
                f"simulated annotator '{username}' cannot log in at {api_url} (401): its password in the "
                "registry no longer matches; delete the user in Argilla and run again"
            )
        self._check(token, "POST /api/v1/token")
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs):
        """One request, retried on transport errors and 5xx for `retry_seconds`. Every call here may be
        repeated safely: a response POSTed twice is refused with 409, which `respond` expects."""
        import httpx

        deadline, delay = time.monotonic() + self.retry_seconds, 0.5
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
                if resp.status_code < 500:
                    return resp
                problem = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"Argilla at {self.api_url} is not answering {method} {path} for simulated annotator "
                    f"'{self.username}' ({problem}); what was answered so far is kept, run again to go on"
                )
            log.warning("Argilla at %s: %s; retrying in %.1f s", self.api_url, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _check(self, resp, what: str) -> None:
        if resp.status_code >= 500:
            raise ServiceError(f"Argilla at {self.api_url} failed {what} for '{self.username}' ({resp.status_code})")
        if resp.status_code >= 400:
            raise AlignError(
                f"Argilla at {self.api_url} refused {what} for '{self.username}' "
                f"({resp.status_code}): {resp.text[:300]}"
            )

    def dataset_id(self, name: str, workspace: str) -> str:
        resp = self._send("GET", "/api/v1/me/workspaces")
        self._check(resp, "GET /api/v1/me/workspaces")
        ws = [w["id"] for w in resp.json()["items"] if w["name"] == workspace]
        resp = self._send("GET", "/api/v1/me/datasets")
        self._check(resp, "GET /api/v1/me/datasets")
        for ds in resp.json()["items"]:
            if ds["name"] == name and ds["workspace_id"] in ws:
                return ds["id"]
        raise AlignError(
            f"annotator '{self.username}' sees no dataset '{name}' in workspace '{workspace}' at "
            f"{self.api_url}; push it first with `align annotate push`"
        )

    def pending(self, dataset_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Records this user has not answered and that are not complete, as the annotation page asks."""
        resp = self._send(
            "POST",
            f"/api/v1/me/datasets/{dataset_id}/records/search",
            params={"limit": limit, "offset": offset},
            json=PENDING_FOR_ME,
        )
        self._check(resp, "POST records/search (pending)")
        return [item["record"] for item in resp.json()["items"]]

    def respond(self, record_id: str, answer: dict[str, Any]) -> bool:
        """POST the response; False when this user had already answered (another run got there first)."""
        resp = self._send("POST", f"/api/v1/records/{record_id}/responses", json=answer)
        if resp.status_code == 409:
            return False
        self._check(resp, f"POST /api/v1/records/{record_id}/responses")
        return True


# -- the command -----------------------------------------------------------------------------------


def check(cfg: Config) -> dict[str, Any]:
    """Everything that can be checked without Argilla (the CLI's --dry-run)."""
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset the simulated annotators label")
    if not cfg.annotators:
        raise AlignError(
            "'annotators' is required: a YAML file listing the simulated annotators "
            "(see annotation/simulated_annotators.example.yaml)"
        )
    annotators = read_annotators(cfg.annotators)
    if cfg.judge not in ("brand_voice", "safety", "reward_model"):
        raise AlignError(f"unknown judge '{cfg.judge}': one of brand_voice, safety, reward_model")
    if cfg.judge == "brand_voice" and not Path(cfg.rubric).is_file():
        raise AlignError(
            f"judge=brand_voice needs rubric=FILE (e.g. recipes/brand_voice/rubric.yaml); not found: '{cfg.rubric}'"
        )
    if cfg.judge == "safety" and not cfg.harmful.paths and not cfg.safe.paths:
        raise AlignError(
            "judge=safety needs harmful.paths and/or safe.paths: the prompt sets saying which prompts "
            "should be refused (e.g. harmful.paths=[data/safety/advbench_harmful_behaviors.csv])"
        )
    if cfg.judge == "reward_model" and not cfg.reward_model:
        raise AlignError("judge=reward_model needs reward_model=RUN (an `align reward` run)")
    return {"annotators": [a.username for a in annotators], "judge": cfg.judge}


def run(cfg: Config) -> dict[str, Any]:
    """Answer what is pending for each simulated annotator, then write a run listing every answer made."""
    check(cfg)
    annotators = read_annotators(cfg.annotators)
    judge = only_on(
        cfg.only, make_judge(cfg)
    )  # a missing rubric, prompt set or reward run fails before any user is made
    passwords = ensure_users(cfg, [a.username for a in annotators])
    api_url = passwords["api_url"]
    sessions = {
        a.username: Session(
            api_url, a.username, passwords[f"password:{a.username}"], cfg.argilla.timeout, cfg.argilla.retry_seconds
        )
        for a in annotators
    }
    stats = {a.username: {"submitted": 0, "discarded": 0, "ties": 0, "already_answered": 0} for a in annotators}
    unjudged: dict[str, set[str]] = {a.username: set() for a in annotators}
    answers: list[dict[str, Any]] = []
    try:
        dataset_id = next(iter(sessions.values())).dataset_id(cfg.dataset, cfg.argilla.workspace)
        active = list(annotators)
        while active:
            for annotator in list(active):
                if _turn(annotator, sessions[annotator.username], dataset_id, cfg, judge, stats, unjudged, answers):
                    active.remove(annotator)
    finally:
        for s in sessions.values():
            s.close()
    left = set().union(*unjudged.values())
    if left:
        log.warning(
            "%d record(s) left for people (or another judge): %s",
            len(left),
            "not in `only`, or in neither the harmful nor the safe set"
            if cfg.only.paths
            else "their prompt is in neither the harmful nor the safe set",
        )

    with runs.new_run("annotate simulate", to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        run_.add_input("annotators", cfg.annotators)
        judge_input = {
            "brand_voice": [cfg.rubric],
            "reward_model": [cfg.reward_model],
            "safety": [*cfg.harmful.paths, *cfg.safe.paths],
        }[cfg.judge]
        for path in judge_input:
            run_.add_input("judge", path)
        for path in cfg.only.paths:
            run_.add_input("only", path)
        with open(run_.path / ANSWERS, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(answer, ensure_ascii=False) + "\n" for answer in answers)
        run_.add_output("answers", ANSWERS)
        run_.notes.update(
            {
                "api_url": api_url,
                "workspace": cfg.argilla.workspace,
                "dataset": cfg.dataset,
                "dataset_id": dataset_id,
                "judge": cfg.judge,
                "simulated_annotators": list(stats),
                "registry": str(registry_path(cfg.journal_dir, api_url)),
            }
        )
        run_.metrics.update(
            {
                "answered": len(answers),
                "submitted": sum(s["submitted"] for s in stats.values()),
                "discarded": sum(s["discarded"] for s in stats.values()),
                "ties": sum(s["ties"] for s in stats.values()),
                "unjudged_records": len(left),
                "per_annotator": stats,
            }
        )
        manifest = runs.finish(run_)
    for name, st in stats.items():
        print(f"{name}: {st['submitted']} submitted ({st['ties']} ties), {st['discarded']} discarded")
    print(
        f"simulated annotators answered {len(answers)} record(s) of '{cfg.dataset}' with judge={cfg.judge}"
        + (f"; {len(left)} left for people (prompt in no set)" if left else "")
    )
    return manifest


def only_on(only: PromptSetConfig, judge: Score) -> Score:
    """`judge` restricted to the records whose prompt is in `only` (None, left pending, for the others)."""
    if not only.paths:
        return judge
    from align.annotate.judges import prompt_key
    from align.evaluation.prompt_sets import load_prompt_set

    keys = {prompt_key(p.messages) for p in load_prompt_set("only", only)}

    def restricted(prompts, shown):
        mine = [i for i, p in enumerate(prompts) if prompt_key(p) in keys]
        scores = judge([prompts[i] for i in mine], [shown[i] for i in mine]) if mine else []
        out: list = [None] * len(prompts)
        for i, score in zip(mine, scores):
            out[i] = score
        return out

    return restricted


def _turn(
    annotator: Annotator,
    session: Session,
    dataset_id: str,
    cfg: Config,
    judge: Score,
    stats: dict[str, dict[str, int]],
    unjudged: dict[str, set[str]],
    answers: list[dict[str, Any]],
) -> bool:
    """One turn of up to `batch` answers; True when this annotator has nothing more to do.

    Records the judge cannot score stay pending for this user; the next page starts after them.
    """
    mine = stats[annotator.username]
    answered = mine["submitted"] + mine["discarded"]
    limit = cfg.batch if cfg.max_per_annotator is None else min(cfg.batch, cfg.max_per_annotator - answered)
    if limit <= 0:
        return True
    skipped = unjudged[annotator.username]
    # The skipped records stay pending for this user; ask for enough to see past them wherever they sort
    # (a person may meanwhile complete some of them, so an offset could jump over unanswered records).
    page = min(limit + len(skipped), SEARCH_LIMIT)  # past 1,000 unjudged records this annotator stops
    records = [r for r in session.pending(dataset_id, page) if r["id"] not in skipped][:limit]
    if not records:
        return True
    scores = judge(
        [r["fields"]["prompt"] for r in records],
        [(r["fields"]["response_a"], r["fields"]["response_b"]) for r in records],
    )
    for record, pair in zip(records, scores):
        if pair is None:
            skipped.add(record["id"])
            continue
        rid = record.get("external_id") or record["id"]
        answer = choose(annotator, cfg, rid, pair)
        if not session.respond(record["id"], answer):
            mine["already_answered"] += 1
            continue
        label = answer["values"].get("preference", {}).get("value")
        mine[answer["status"]] += 1
        mine["ties"] += label == "tie"
        answers.append(
            {
                "record_id": rid,
                "annotator": annotator.username,
                "status": answer["status"],
                "shown_label": label,
                "score_shown_a": pair[0],
                "score_shown_b": pair[1],
            }
        )
    return False


def ensure_users(cfg: Config, usernames: list[str]) -> dict[str, Any]:
    """Make the simulated users (the team script's path) and record their ids; returns the registry."""
    from align.annotate import team

    with connect(cfg.argilla) as conn:
        api_url = conn.api_url
        users = {u.username: str(u.id) for u in conn.call("GET users", lambda: list(conn.client.users))}
    path = registry_path(cfg.journal_dir, api_url)
    registry = local.read_credentials(path) if path.exists() else {"api_url": api_url}
    strangers = [n for n in usernames if n in users and f"password:{n}" not in registry]
    if strangers:
        raise AlignError(
            f"user(s) {', '.join(strangers)} already exist at {api_url} and are not simulated annotators made by "
            f"this command (registry {path}); a simulated annotator needs a username of its own"
        )
    result = team.invite({"workspace": cfg.argilla.workspace, "annotators": usernames}, cfg.argilla, path)
    registry = local.read_credentials(path)
    # The id goes into the registry before the user answers anything: every simulated vote is marked.
    registry.update({f"user_id:{name}": user_id for name, user_id in result["ids"].items()})
    local.write_private_json(path, registry)
    if result["created"]:
        log.info("simulated annotators created at %s: %s (registry %s)", api_url, ", ".join(result["created"]), path)
    return registry
