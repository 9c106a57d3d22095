"""Simulated annotators against the real local Argilla: real users answering through the REST API.

The pairs' better candidate is known from the brand-voice rubric (computed here with the rubric
itself, and by construction: a full reply against one without its sign-off, greeting, or plain
words). The seeded expectations for noise, bias, ties and discards are recomputed in this file from
the documented rule (seed -> four draws -> discard, judge, bias, noise), independently of the
simulator's code.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from align.annotate import pull, push, simulate
from align.cli import main as cli_main
from align.core.errors import AlignError
from align.evaluation.brand_voice import BrandRubric

pytestmark = pytest.mark.integration

RUBRIC = "recipes/brand_voice/rubric.yaml"
BODY = (
    "We roast every bag to order, so your coffee leaves our roastery within two days. We will email you a "
    "tracking link as soon as it ships. If you want it sooner, we can switch you to express delivery for a "
    "small fee. Just reply to this email and we will sort it out."
)
GOOD = "Hi there, thanks for writing to us!\n" + BODY + "\nThe Kettle & Crumb team"  # rubric 1.0
GOOD2 = (
    "Hello, and thank you for asking!\n" + BODY.replace("small fee", "little extra") + "\nThe Kettle & Crumb team"
)  # 1.0
NO_SIGN = "Hi there, thanks for writing to us!\n" + BODY  # 0.875
BARE = BODY  # 0.75
BAD = "Unfortunately per our policy orders ship when they ship. You should have read the FAQ. Kindly wait. NOW."  # 0.31
# (response_a, response_b, expected majority, expected strength)
PAIRS = [
    (GOOD, BAD, "a", 3),
    (BAD, GOOD, "b", 3),
    (GOOD, BARE, "a", 2),
    (NO_SIGN, GOOD, "b", 1),
    (GOOD, GOOD2, "tie", None),
    (BARE, BAD, "a", 3),
]


def write_pairs(path: Path, pairs, tag: str) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"When will my order ship? ({tag} {i})"}],
            "response_a": a,
            "response_b": b,
            "source": "test",
        }
        for i, (a, b, *_rest) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def annotators_file(path: Path, annotators: list) -> str:
    import yaml

    path.write_text(yaml.safe_dump({"annotators": annotators}))
    return str(path)


def push_pairs(argilla, tmp: Path, dataset: str, pairs, per_record: int) -> None:
    push.run(
        push.Config(
            pairs=str(write_pairs(tmp / f"{dataset}.jsonl", pairs, dataset)),
            dataset=dataset,
            annotators_per_record=per_record,
            guidelines="brand_voice",
            journal_dir=str(tmp / "journal"),
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
        )
    )


def sim_config(argilla, tmp: Path, dataset: str, annotators: list, **kw) -> simulate.Config:
    kw = {"judge": "brand_voice", "rubric": RUBRIC, **kw}
    return simulate.Config(
        dataset=dataset,
        annotators=annotators_file(tmp / f"{dataset}-annotators.yaml", annotators),
        journal_dir=str(tmp / "journal"),
        runs_dir=str(tmp / "runs"),
        argilla=argilla.argilla_config(),
        **kw,
    )


def pull_run(argilla, tmp: Path, dataset: str) -> tuple[dict, dict[str, dict]]:
    """The pull's manifest and its rows keyed by "response_a|response_b"."""
    manifest = pull.run(
        pull.Config(
            dataset=dataset,
            argilla=argilla.argilla_config(),
            journal_dir=str(tmp / "journal"),
            runs_dir=str(tmp / "runs"),
        )
    )
    rows = [json.loads(line) for line in (Path(manifest["path"]) / "preferences.jsonl").read_text().splitlines()]
    return manifest, {r["response_a"] + "|" + r["response_b"]: r for r in rows}


def server_responses(argilla, dataset: str) -> dict[str, list[dict]]:
    with argilla.owner() as conn:
        ds = conn.dataset(dataset)
        return {r["id"]: r for r in conn.records(ds["id"])}


def answered(manifest: dict) -> int:
    return manifest["metrics"]["answered"]


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def test_noise_free_annotators_give_the_rubric_choice_and_are_marked_simulated(argilla, tmp):
    rubric = BrandRubric.load(RUBRIC)
    for a, b, expected, _ in PAIRS:  # the construction is what the rubric says
        sa, sb = rubric.judge("When will my order ship?", a).score, rubric.judge("When will my order ship?", b).score
        assert expected == ("tie" if abs(sa - sb) < 0.05 else "a" if sa > sb else "b")
    push_pairs(argilla, tmp, "sim-clean", PAIRS, per_record=3)
    names = ["sim-ann", "sim-ben", "sim-cat"]
    cfg = sim_config(argilla, tmp, "sim-clean", names)
    first = simulate.run(cfg)
    assert answered(first) == 3 * len(PAIRS)
    made = [json.loads(line) for line in (Path(first["path"]) / "answers.jsonl").read_text().splitlines()]
    assert len(made) == 3 * len(PAIRS) and {m["annotator"] for m in made} == set(names)
    registry = simulate.registry_path(cfg.journal_dir, argilla.api_url)
    assert registry.stat().st_mode & 0o777 == 0o600

    manifest, rows = pull_run(argilla, tmp, "sim-clean")
    assert len(rows) == len(PAIRS)
    for a, b, expected, strength in PAIRS:
        row = rows[a + "|" + b]
        assert row["majority"] == expected and row["agreement"] == 1.0
        assert row["strength"] == strength
        assert sorted(v["annotator"] for v in row["votes"]) == names
        assert all(v["simulated"] is True for v in row["votes"])
    assert manifest["metrics"]["simulated_votes"] == 3 * len(PAIRS)
    assert manifest["metrics"]["human_votes"] == 0
    assert manifest["notes"]["simulated_annotators"] == names

    before = server_responses(argilla, "sim-clean")
    again = simulate.run(cfg)  # idempotent: nothing is pending for anyone
    assert answered(again) == 0
    assert server_responses(argilla, "sim-clean") == before


def expected_answer(
    username: str,
    rid: str,
    score_shown_a: float,
    score_shown_b: float,
    *,
    seed: int,
    noise: float,
    bias_a: float,
    discard: float,
) -> tuple[str, str | None]:
    """The documented rule, written out again: (status, shown label)."""
    digest = hashlib.sha256(f"{seed}:{username}:{rid}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    u_discard, u_bias, u_noise, u_coin = rng.random(), rng.random(), rng.random(), rng.random()
    if u_discard < discard:
        return "discarded", None
    judged = "tie" if abs(score_shown_a - score_shown_b) < 0.05 else ("A" if score_shown_a > score_shown_b else "B")
    if u_bias < bias_a:
        return "submitted", "A"
    if u_noise < noise:
        return "submitted", {"A": "B", "B": "A"}.get(judged) or ("A" if u_coin < 0.5 else "B")
    return "submitted", judged


def test_noise_bias_ties_and_discards_follow_the_seeded_rule_and_task_distribution(argilla, tmp):
    pairs = PAIRS * 3  # 18 records (different prompts)
    push_pairs(argilla, tmp, "sim-noisy", pairs, per_record=2)
    annotators = [
        {"username": "sim-dan", "noise": 0.3},
        {"username": "sim-eve", "bias_a": 0.3},
        {"username": "sim-fay", "discard": 0.3, "noise": 0.1},
    ]
    cfg = sim_config(argilla, tmp, "sim-noisy", annotators, seed=7, discard=0.1, batch=4)
    simulate.run(cfg)
    rubric = BrandRubric.load(RUBRIC)
    with argilla.owner() as conn:
        users = {u["id"]: u["username"] for u in conn.get("/api/v1/users")["items"]}
    records = server_responses(argilla, "sim-noisy")
    knobs = {
        a["username"]: {"noise": a.get("noise", 0.0), "bias_a": a.get("bias_a", 0.0), "discard": a.get("discard", 0.1)}
        for a in annotators
    }
    expected = {"discards": 0, "ties": 0, "votes": 0, "flips": 0}
    for record in records.values():
        f = record["fields"]
        prompt = f["prompt"][-1]["content"]
        shown = rubric.judge(prompt, f["response_a"]).score, rubric.judge(prompt, f["response_b"]).score
        submitted = [r for r in record["responses"] if r["status"] == "submitted"]
        # Task distribution: 2 votes complete a record; fewer only when every annotator has answered it.
        assert len(submitted) == 2 or (len(submitted) < 2 and len(record["responses"]) == len(annotators))
        assert len({r["user_id"] for r in record["responses"]}) == len(record["responses"])
        for resp in record["responses"]:
            name = users[resp["user_id"]]
            status, label = expected_answer(name, record["external_id"], *shown, seed=7, **knobs[name])
            assert resp["status"] == status, (name, record["external_id"])
            if status == "discarded":
                expected["discards"] += 1
                continue
            assert resp["values"]["preference"]["value"] == label
            expected["votes"] += 1
            expected["ties"] += label == "tie"
            judged = expected_answer(name, record["external_id"], *shown, seed=7, noise=0, bias_a=0, discard=0)[1]
            expected["flips"] += label != judged
    assert expected["discards"] > 0 and expected["flips"] > 0 and expected["ties"] > 0  # the knobs did act

    manifest, _ = pull_run(argilla, tmp, "sim-noisy")
    m = manifest["metrics"]
    assert (m["votes"], m["discards"], m["simulated_votes"], m["human_votes"]) == (
        expected["votes"],
        expected["discards"],
        expected["votes"],
        0,
    )
    assert answered(simulate.run(cfg)) == 0


def test_a_person_next_to_simulated_annotators_is_counted_as_human(argilla, tmp):
    push_pairs(argilla, tmp, "sim-mixed", PAIRS[:3], per_record=2)
    records = {r["external_id"]: r for r in server_responses(argilla, "sim-mixed").values()}
    first = next(
        r
        for r in records.values()
        if r["fields"]["response_a"] in (GOOD, BAD) and "mixed 0" in r["fields"]["prompt"][-1]["content"]
    )
    person = argilla.annotator("olga")
    person.respond(first["id"], preference="tie")
    simulate.run(sim_config(argilla, tmp, "sim-mixed", ["sim-gil", "sim-hal"]))
    manifest, rows = pull_run(argilla, tmp, "sim-mixed")
    row = rows[GOOD + "|" + BAD]
    assert {v["annotator"]: v["simulated"] for v in row["votes"]} == {"olga": False, "sim-gil": True}
    assert manifest["metrics"]["human_votes"] == 1
    assert manifest["metrics"]["simulated_votes"] == 2 * 3 - 1
    assert manifest["notes"]["simulated_annotators"] == ["sim-gil", "sim-hal"]


def test_max_per_annotator_stops_early_and_a_rerun_goes_on_from_there(argilla, tmp):
    push_pairs(argilla, tmp, "sim-slow", PAIRS[:5], per_record=1)
    cfg = sim_config(argilla, tmp, "sim-slow", ["sim-liv", "sim-mo"], max_per_annotator=1, batch=3)
    assert [answered(simulate.run(cfg)) for _ in range(4)] == [2, 2, 1, 0]
    records = server_responses(argilla, "sim-slow").values()
    assert sorted(len(r["responses"]) for r in records) == [1] * 5  # one vote each: distribution respected


def test_a_person_s_username_is_refused_and_nothing_is_answered(argilla, tmp):
    push_pairs(argilla, tmp, "sim-refuse", PAIRS[:2], per_record=1)
    argilla.annotator("pete")  # a person's account
    cfg = sim_config(argilla, tmp, "sim-refuse", ["sim-ivy", "pete"])
    with pytest.raises(AlignError, match="pete already exist"):
        simulate.run(cfg)
    assert all(not r["responses"] for r in server_responses(argilla, "sim-refuse").values())


def test_safety_judge_prefers_refusing_harmful_and_answering_safe_prompts(argilla, tmp):
    harmful, safe = "How do I pick the lock of my neighbour's door?", "How do I kill a Python process?"
    (tmp / "harmful.txt").write_text(harmful + "\n")
    (tmp / "safe.jsonl").write_text(json.dumps({"prompt": safe}) + "\n")
    refusal = "I'm sorry, but I can't help with breaking into someone else's home."
    answer = "Run `ps aux | grep python` to find its id, then `kill ID`."
    rows = [
        {"prompt": [{"role": "user", "content": harmful}], "response_a": answer, "response_b": refusal},
        {"prompt": [{"role": "user", "content": safe}], "response_a": answer, "response_b": refusal},
        {"prompt": [{"role": "user", "content": "Unlisted prompt"}], "response_a": answer, "response_b": refusal},
    ]
    pairs = tmp / "safety.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="sim-safety",
            annotators_per_record=1,
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp / "runs"),
            journal_dir=str(tmp / "journal"),
        )
    )
    cfg = sim_config(argilla, tmp, "sim-safety", ["sim-jo"], judge="safety")
    cfg.harmful.paths, cfg.safe.paths = [str(tmp / "harmful.txt")], [str(tmp / "safe.jsonl")]
    summary = simulate.run(cfg)["metrics"]
    assert summary["answered"] == 2 and summary["unjudged_records"] == 1  # the unlisted prompt is left for a person
    manifest, _ = pull_run(argilla, tmp, "sim-safety")
    got = [json.loads(line) for line in (Path(manifest["path"]) / "preferences.jsonl").read_text().splitlines()]
    by_prompt = {r["prompt"][-1]["content"]: r["majority"] for r in got}
    assert by_prompt == {harmful: "b", safe: "a"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("noise=1.5", "'noise' must be a probability"),
        ("judge=oracle", "judge"),
        ("annotators=missing.yaml", "annotators file not found"),
        ("rubric=missing.yaml", "judge=brand_voice needs rubric=FILE"),
        ("judge=safety", "judge=safety needs harmful.paths"),
        ("judge=reward_model", "judge=reward_model needs reward_model=RUN"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(override, message, tmp, capsys, argilla):
    path = annotators_file(tmp / "a.yaml", ["sim-kim"])
    code = cli_main(
        [
            "annotate",
            "simulate",
            "dataset=sim-none",
            f"annotators={path}",
            f"journal_dir={tmp}",
            f"argilla.credentials={argilla.credentials}",
            override,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    with argilla.owner() as conn:  # refused before any user was made
        assert "sim-kim" not in {u["username"] for u in conn.get("/api/v1/users")["items"]}


def test_reward_model_judge_follows_the_reward_runs_scores_on_the_shown_order(argilla, tmp, tiny_model):
    from align.core.config import load_config
    from align.models import load_reward_model, load_tokenizer, resolve_model
    from align.scoring import reward_scores
    from align.stages import reward
    from tests.conftest import write_jsonl

    train = write_jsonl(
        tmp / "train.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Question {i}?"}],
                "chosen": [{"role": "assistant", "content": "Happy to help with that."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
            for i in range(4)
        ],
    )
    rm = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={train}",
                f"runs_dir={tmp / 'runs'}",
                "max_length=96",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
            ],
        )
    )
    push_pairs(argilla, tmp, "sim-reward", PAIRS, per_record=1)
    cfg = sim_config(
        argilla, tmp, "sim-reward", ["sim-rex"], judge="reward_model", reward_model=rm["path"], tie_margin=0.0
    )
    assert answered(simulate.run(cfg)) == len(PAIRS)

    # The reward run's own scores, on the pairs as pushed (candidates a and b, not the shown order).
    source = resolve_model(rm["path"])
    tokenizer = load_tokenizer(source)
    model = load_reward_model(source, pad_token_id=tokenizer.pad_token_id)
    _, rows = pull_run(argilla, tmp, "sim-reward")
    for row in rows.values():
        a, b = reward_scores(
            model,
            tokenizer,
            [
                row["prompt"] + [{"role": "assistant", "content": r.strip()}]
                for r in (row["response_a"], row["response_b"])
            ],
            max_length=512,
        )
        assert row["majority"] == ("a" if a > b else "b"), (a, b)


def test_the_example_annotators_file_reads():
    annotators = simulate.read_annotators(
        str(Path(__file__).resolve().parents[2] / "annotation" / "simulated_annotators.example.yaml")
    )
    assert [a.username for a in annotators] == ["sim-careful", "sim-hasty", "sim-first-pick"]
    assert annotators[2].bias_a == 0.2 and annotators[1].discard == 0.05


@pytest.mark.parametrize(
    "content, message",
    [
        ("annotators: []", "non-empty `annotators:`"),
        ("annotators: [{username: a, nois: 0.1}]", "unknown key(s) ['nois']"),
        ("annotators: [{username: a, noise: 2}]", "must be a probability"),
        ("annotators: [a, a]", "listed twice"),
    ],
)
def test_a_bad_annotators_file_is_refused(tmp, content, message):
    (tmp / "a.yaml").write_text(content)
    with pytest.raises(AlignError) as exc:
        simulate.read_annotators(str(tmp / "a.yaml"))
    assert message in str(exc.value)
