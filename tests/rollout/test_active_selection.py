"""Uncertainty-based pair selection (ensemble disagreement, DPO margin) with hand-worked numbers, the
label budget (`push.max_records`), and the stages that record what the rules need (`align score`,
`align reward-ensemble`) on tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from align.cli import main
from align.core import runs
from align.rollout.pairs import (
    Candidate,
    bernoulli_entropy,
    budget,
    choose_pair,
    dpo_margin,
    ensemble_disagreement,
    sigmoid,
)
from tests.conftest import build_tiny_model, write_jsonl
from tests.rollout.test_pairs import make_generation_run, prompt, read_pairs


def texts(choice):
    return {choice.a.text, choice.b.text}


def test_ensemble_disagreement_by_hand():
    # Two members: A - B = +2 for one, -2 for the other. p = sigmoid(2) = 0.880797 and 0.119203, mean 0.5.
    # H(0.5) = 1 bit; H(0.880797) = 0.880797 * 0.183119 + 0.119203 * 3.068531 = 0.161292 + 0.365776 = 0.527068.
    # BALD = 1 - 0.527068 = 0.472932.
    assert ensemble_disagreement([2.0, 0.0], [0.0, 2.0]) == pytest.approx(0.472930, abs=1e-5)
    # Members that agree give 0 whatever they agree on: sure (d = +3 twice) or a coin flip (d = 0 twice).
    assert ensemble_disagreement([3.0, 3.0], [0.0, 0.0]) == pytest.approx(0.0, abs=1e-12)
    assert ensemble_disagreement([1.0, -4.0], [1.0, -4.0]) == pytest.approx(0.0, abs=1e-12)
    # Symmetric in A and B, and at most 1 bit (members certain in opposite directions).
    assert ensemble_disagreement([0.0, 2.0], [2.0, 0.0]) == pytest.approx(0.472930, abs=1e-5)
    assert ensemble_disagreement([40.0, -40.0], [0.0, 0.0]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same number"):
        ensemble_disagreement([1.0], [1.0, 2.0])


def test_ensemble_disagreement_chooses_the_pair_members_disagree_on():
    # Three replies, two members. Pairs (member differences d, then p = sigmoid(d)):
    #   A-B: d = (-1, 0): p = (0.268941, 0.5), mean 0.384471: H = 0.961138; mean H = (0.839942 + 1) / 2 = 0.919971
    #        -> 0.041167
    #   A-C: d = (-3, 3): p = (0.047426, 0.952574), mean 0.5: 1 - H(0.952574) = 1 - 0.275359 = 0.724641
    #   B-C: d = (-2, 3): p = (0.119203, 0.952574), mean 0.535889: 0.996280 - (0.527065 + 0.275360) / 2 = 0.595068
    cands = [
        Candidate("A", 0.0, members=[0.0, 0.0]),
        Candidate("B", 0.5, members=[1.0, 0.0]),
        Candidate("C", 0.0, members=[3.0, -3.0]),
    ]
    for seed in range(5):
        choice = choose_pair(cands, "ensemble_disagreement", random.Random(seed))
        assert texts(choice) == {"A", "C"}
        assert choice.uncertainty == pytest.approx(0.724641, abs=1e-5)
    assert ensemble_disagreement([1.0, 0.0], [3.0, -3.0]) == pytest.approx(0.595068, abs=1e-5)
    assert ensemble_disagreement([0.0, 0.0], [1.0, 0.0]) == pytest.approx(0.041167, abs=1e-5)
    with pytest.raises(ValueError, match="member scores"):
        choose_pair([Candidate("A", 0.0), Candidate("B", 1.0)], "ensemble_disagreement", random.Random(0))


def test_dpo_margin_by_hand():
    # log-ratios A 2.0, B -1.0, C 1.5, beta 0.1: margins A-B 0.3, A-C 0.05, B-C -0.25: A-C is the least settled.
    assert dpo_margin(2.0, 1.5, 0.1) == pytest.approx(0.05)
    cands = [
        Candidate("A", None, logratio=2.0),
        Candidate("B", None, logratio=-1.0),
        Candidate("C", None, logratio=1.5),
    ]
    choice = choose_pair(cands, "dpo_margin", random.Random(0), beta=0.1)
    assert texts(choice) == {"A", "C"}
    # sigmoid(0.05) = 0.512497; H = 1 - 0.000451 (near 1/2, H(1/2 + e) ~ 1 - 2 e^2 / ln 2 = 1 - 0.000451).
    assert choice.uncertainty == pytest.approx(0.999549, abs=1e-5)
    # beta scales the margin: the same pair, a lower uncertainty.
    wide = choose_pair(cands, "dpo_margin", random.Random(0), beta=10.0)
    assert texts(wide) == {"A", "C"} and wide.uncertainty == pytest.approx(bernoulli_entropy(sigmoid(5.0)))


def test_dpo_margin_of_a_policy_that_is_its_reference_draws_at_random():
    # Every margin is 0 (round 1 of a loop scores the policy against itself): a random pair, not always the first two.
    cands = [Candidate(t, None, logratio=0.0) for t in "abcd"]
    picks = {frozenset(texts(choose_pair(cands, "dpo_margin", random.Random(s)))) for s in range(30)}
    assert len(picks) > 2
    assert choose_pair(cands, "dpo_margin", random.Random(0)).uncertainty == pytest.approx(1.0)


def test_least_sure_reports_its_uncertainty():
    cands = [Candidate("a", 0.0), Candidate("b", 5.0), Candidate("c", 2.1), Candidate("d", 2.0)]
    # gap 0.1: sigmoid(0.1) = 0.524979, H = 0.998199
    assert choose_pair(cands, "least_sure", random.Random(0)).uncertainty == pytest.approx(0.998199, abs=1e-5)
    assert choose_pair(cands, "best_vs_worst", random.Random(0)).uncertainty is None


def test_budget_keeps_the_most_uncertain_in_input_order_or_a_seeded_random_sample():
    pairs = [{"id": i, "uncertainty": u} for i, u in enumerate([0.2, 0.9, 0.5, 0.95, 0.1])]
    kept, rule = budget(pairs, 2, "ds:1")
    assert rule == "most_uncertain" and [p["id"] for p in kept] == [1, 3]
    assert budget(pairs, 9, "ds:1") == (pairs, "all")
    # Equal uncertainty everywhere (a policy scored against itself): a seeded draw, not the first pairs.
    flat = [{"id": i, "uncertainty": 1.0} for i in range(20)]
    draws = {tuple(p["id"] for p in budget(flat, 5, f"ds:{r}")[0]) for r in range(5)}
    assert len(draws) > 1 and (0, 1, 2, 3, 4) not in draws
    plain = [{"id": i, "uncertainty": None} for i in range(20)]
    kept, rule = budget(plain, 5, "ds:1")
    assert rule == "random" and len(kept) == 5 and [p["id"] for p in kept] == sorted(p["id"] for p in kept)
    assert budget(plain, 5, "ds:1") == (kept, "random")  # seeded: a re-run pushes the same records
    assert {tuple(p["id"] for p in budget(plain, 5, f"ds:{r}")[0]) for r in range(5)} != {tuple(p["id"] for p in kept)}


def test_pairs_stage_writes_uncertainty_and_needs_member_scores(tmp_path, capsys):
    rows = [
        {
            "prompt": prompt(0),
            "responses": ["A", "B", "C"],
            "scores": [0.0, 0.5, 0.0],
            "member_scores": [[0.0, 0.0], [1.0, 0.0], [3.0, -3.0]],
            "prompt_id": "p0",
        },
        {
            "prompt": prompt(1),
            "responses": ["x", "y"],
            "scores": [1.0, 1.0],
            "member_scores": [[1.0, 1.0], [1.0, 1.0]],
            "prompt_id": "p1",
        },
    ]
    gen = make_generation_run(tmp_path, rows, n=3)
    assert main(["pairs", str(gen), "selection=ensemble_disagreement", f"runs_dir={tmp_path / 'runs'}", "name=e"]) == 0
    first, second = read_pairs(tmp_path / "runs" / "e")
    assert {first["response_a"], first["response_b"]} == {"A", "C"} and first["uncertainty"] == pytest.approx(
        0.724641, abs=1e-5
    )
    assert second["uncertainty"] == 0.0
    metrics = runs.read_manifest(tmp_path / "runs" / "e")["metrics"]
    assert metrics["mean_uncertainty_bits"] == pytest.approx(0.3623, abs=1e-4)

    bare = make_generation_run(
        tmp_path, [{"prompt": prompt(0), "responses": ["a", "b"], "scores": [0.0, 1.0]}], n=2, name="b"
    )
    for selection, needs in (("ensemble_disagreement", "member_scores"), ("dpo_margin", "logratios")):
        assert main(["pairs", str(bare), f"selection={selection}", f"runs_dir={tmp_path / 'runs'}"]) == 2
        assert needs in capsys.readouterr().err


def test_push_max_records_keeps_the_most_uncertain(tmp_path):
    from align.annotate import push

    rows = [
        {"prompt": prompt(i), "response_a": f"answer {i}", "response_b": f"other {i}", "uncertainty": u}
        for i, u in enumerate([0.1, 0.8, 0.3, 0.9, 0.5])
    ]
    file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    _, _, _, records, _unique, report = push.prepare(push.Config(pairs=str(file), dataset="d", max_records=2))
    assert report["budget"] == {"max_records": 2, "offered": 5, "kept": 2, "rule": "most_uncertain"}
    assert sorted(r["where"] for r in records) == [f"{file}:2", f"{file}:4"]
    for r in rows:
        r["uncertainty"] = None
    write_jsonl(file, rows)
    report = push.check(push.Config(pairs=str(file), dataset="d", max_records=3))
    assert report["records"] == 3 and report["budget"]["rule"] == "random"
    with pytest.raises(Exception, match="max_records"):
        push.Config(pairs=str(file), dataset="d", max_records=0)


@pytest.fixture(scope="module")
def tiny_reward_models(tmp_path_factory, tiny_model) -> list[Path]:
    """Two tiny sequence classifiers (1 output, different initial weights) sharing the tiny policy's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp(f"tiny-rm-{seed}")
        config = LlamaConfig.from_pretrained(tiny_model)
        config.num_labels = 1
        torch.manual_seed(seed)
        LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
        AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
        out.append(path)
    return out


def hand_made_ensemble(runs_dir: Path, members: list[Path]) -> Path:
    """A `reward ensemble` run listing the given reward models (what `align reward-ensemble` writes)."""
    with runs.new_run("reward ensemble", {"hand_made": True}, runs_dir, "ens") as run:
        (run.path / "members.json").write_text(json.dumps([str(m) for m in members]))
        run.add_output("members", "members.json")
        runs.finish(run)
    return runs_dir / "ens"


def test_score_with_an_ensemble_records_member_scores(tmp_path, tiny_reward_models):
    rows = [{"prompt": prompt(i), "responses": ["yes", "no", "maybe so"], "prompt_id": f"p{i}"} for i in range(3)]
    gen = make_generation_run(tmp_path, rows, n=3)
    ens = hand_made_ensemble(tmp_path / "runs", tiny_reward_models)
    assert main(["score", str(gen), f"reward_model={ens}", f"runs_dir={tmp_path / 'runs'}", "name=s"]) == 0
    manifest = runs.read_manifest(tmp_path / "runs" / "s")
    scored = [
        json.loads(l)
        for l in runs.output_path(tmp_path / "runs" / "s", manifest, "generations").read_text().splitlines()
    ]
    for row in scored:
        assert len(row["member_scores"]) == 3 and all(len(m) == 2 for m in row["member_scores"])
        assert row["scores"] == pytest.approx([sum(m) / 2 for m in row["member_scores"]])
        assert all(m[0] != m[1] for m in row["member_scores"])  # two different heads
    assert manifest["metrics"]["ensemble_members"] == 2
    assert {"reward_member_0", "reward_member_1"} <= {i["role"] for i in manifest["inputs"]}
    assert (
        main(
            [
                "pairs",
                str(tmp_path / "runs" / "s"),
                "selection=ensemble_disagreement",
                f"runs_dir={tmp_path / 'runs'}",
                "name=p",
            ]
        )
        == 0
    )
    for pair, row in zip(read_pairs(tmp_path / "runs" / "p"), scored):
        by_text = dict(zip(row["responses"], row["member_scores"]))
        best = max(
            ensemble_disagreement(by_text[a], by_text[b])
            for a, b in (("yes", "no"), ("yes", "maybe so"), ("no", "maybe so"))
        )
        assert pair["uncertainty"] == pytest.approx(best, abs=1e-6)
        assert pair["uncertainty"] == pytest.approx(
            ensemble_disagreement(by_text[pair["response_a"]], by_text[pair["response_b"]]), abs=1e-6
        )


def test_score_logratios_match_a_direct_computation(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = build_tiny_model(tmp_path / "other", seed=1)
    rows = [
        {
            "prompt": prompt(0),
            "responses": ["yes indeed", "no"],
            "finish_reasons": ["stop", "length"],
            "prompt_id": "p0",
        }
    ]
    gen = make_generation_run(tmp_path, rows, n=2)
    assert (
        main(
            ["score", str(gen), f"policy={tiny_model}", f"reference={other}", f"runs_dir={tmp_path / 'runs'}", "name=l"]
        )
        == 0
    )
    manifest = runs.read_manifest(tmp_path / "runs" / "l")
    (row,) = [
        json.loads(l)
        for l in runs.output_path(tmp_path / "runs" / "l", manifest, "generations").read_text().splitlines()
    ]

    tok = AutoTokenizer.from_pretrained(tiny_model)

    def logp(model_dir, reply_ids):
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        ids = tok.apply_chat_template(prompt(0), tokenize=True, add_generation_prompt=True, return_dict=False)
        seq = torch.tensor([list(ids) + reply_ids])
        with torch.no_grad():
            logits = model(seq).logits.log_softmax(-1)[0]
        return sum(float(logits[len(ids) + t - 1, tok_id]) for t, tok_id in enumerate(reply_ids))

    # "yes indeed" stopped on end-of-turn: its tokens end with eos; "no" was cut at max_tokens: no eos.
    replies = [
        tok("yes indeed", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
        tok("no", add_special_tokens=False)["input_ids"],
    ]
    for got, reply in zip(row["logratios"], replies):
        assert got == pytest.approx(logp(tiny_model, reply) - logp(other, reply), abs=1e-4)
    assert manifest["metrics"]["policy_is_reference"] is False
    assert (
        main(
            [
                "score",
                str(gen),
                f"policy={tiny_model}",
                f"reference={tiny_model}",
                f"runs_dir={tmp_path / 'runs'}",
                "name=same",
            ]
        )
        == 0
    )
    m = runs.read_manifest(tmp_path / "runs" / "same")
    (same,) = [
        json.loads(l) for l in runs.output_path(tmp_path / "runs" / "same", m, "generations").read_text().splitlines()
    ]
    assert same["logratios"] == [0.0, 0.0] and m["metrics"]["policy_is_reference"] is True


@pytest.mark.slow
def test_reward_ensemble_trains_members_on_bootstrap_resamples(tmp_path, tiny_model, easy_pairs):
    assert (
        main(
            [
                "reward-ensemble",
                f"reward.model={tiny_model}",
                f"reward.data.train={easy_pairs}",
                "reward.data.test_fraction=0.25",
                "bootstrap.members=2",
                "reward.max_length=64",
                "reward.training.max_steps=2",
                "reward.training.per_device_train_batch_size=4",
                f"runs_dir={tmp_path / 'runs'}",
                "name=ens",
            ]
        )
        == 0
    )
    ens = tmp_path / "runs" / "ens"
    manifest = runs.read_manifest(ens)
    assert manifest["stage"] == "reward ensemble" and manifest["metrics"]["members"] == 2
    assert len(manifest["metrics"]["member_test_accuracy"]) == 2
    resamples = runs.read_manifest(tmp_path / "runs" / "ens-resamples")
    train = [(tmp_path / "runs" / "ens-resamples" / f"train-{k}.jsonl").read_text().splitlines() for k in range(2)]
    held = (tmp_path / "runs" / "ens-resamples" / "test.jsonl").read_text().splitlines()
    assert len(train[0]) == len(train[1]) and train[0] != train[1]
    # Drawn with replacement: repeats within a resample; never a held-out prompt.
    assert resamples["outputs"]["train_0"]["distinct"] < len(train[0])
    held_prompts = {json.dumps(json.loads(l)["prompt"]) for l in held}
    assert not held_prompts & {json.dumps(json.loads(l)["prompt"]) for t in train for l in t}
    for k in range(2):
        member = runs.read_manifest(tmp_path / "runs" / f"ens-member-{k}")
        assert member["stage"] == "reward" and member["metrics"]["test_pairs"] == len(held)
        assert member["config"]["seed"] == k and member["config"]["data"]["train"].endswith(f"train-{k}.jsonl")
    # A bad reward setting is refused before anything is written (align reward's own check, exit 2).
    assert (
        main(
            [
                "reward-ensemble",
                "reward.model=embedded",
                f"reward.data.train={easy_pairs}",
                "reward.lerning_rate=1",
                f"runs_dir={tmp_path / 'bad'}",
                "--dry-run",
            ]
        )
        == 2
    )
    assert not (tmp_path / "bad").exists()
    from align.scoring import reward_members

    assert reward_members(str(ens)) == [str((tmp_path / "runs" / f"ens-member-{k}").resolve()) for k in range(2)]


# -- the loop: push.max_records, ensemble_disagreement's preflight, dpo_margin's reference -----------------------

ROOT = Path(__file__).resolve().parents[2]


def test_loop_takes_a_label_budget_and_refuses_an_ensemble_rule_without_an_ensemble(monkeypatch, tmp_path):
    from align.core.config import load_config
    from align.core.errors import AlignError
    from align.loop.config import LoopConfig, stage_config
    from align.loop.preflight import preflight

    monkeypatch.chdir(ROOT)
    cfg = load_config(LoopConfig, ROOT / "recipes/safety/loop.yaml", ["push.max_records=16"])
    preflight(cfg)
    push = stage_config("push", cfg.push, {"pairs": "x", "dataset": "d", "round": 1, "runs_dir": ".", "name": "x"})
    assert push.max_records == 16
    with pytest.raises(AlignError, match="needs scored candidates"):
        preflight(load_config(LoopConfig, ROOT / "recipes/safety/loop.yaml", ["pairs.selection=ensemble_disagreement"]))
    ens = hand_made_ensemble(tmp_path, [tmp_path / "a", tmp_path / "b"])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with pytest.raises(AlignError, match="reward ensemble"):  # a single reward model has nothing to disagree with
        preflight(
            load_config(
                LoopConfig,
                ROOT / "recipes/safety/loop.yaml",
                ["pairs.selection=ensemble_disagreement", f"reward_model={tmp_path / 'a'}"],
            )
        )
    with pytest.raises(AlignError, match="must not retrain"):
        preflight(
            load_config(
                LoopConfig,
                ROOT / "recipes/safety/loop.yaml",
                ["pairs.selection=ensemble_disagreement", f"reward_model={ens}", "train.stages=[reward,dpo]"],
            )
        )
    with pytest.raises(AlignError, match="set by the loop"):
        stage_config("score", {"policy": "x"}, {"generations": "g", "reward_model": "r", "runs_dir": ".", "name": "x"})


def test_dpo_reference_of_a_loop_policy(tmp_path):
    from align.loop.run import dpo_reference

    for name, config in (
        ("plain", {"model": "/m/start", "reference": None}),
        ("named", {"model": "/m/start", "reference": "/m/ref"}),
    ):
        with runs.new_run("dpo", config, tmp_path, name) as run:
            runs.finish(run)
    assert dpo_reference(str(tmp_path / "plain")) == "/m/start"
    assert dpo_reference(str(tmp_path / "named")) == "/m/ref"
    assert dpo_reference("embedded") == "embedded"  # not a DPO run: its own reference


@pytest.mark.integration
def test_loop_rounds_with_dpo_margin_and_a_label_budget(argilla, tiny_model, tmp_path):
    """Two rounds against the real local Argilla: round 1 scores the start policy against itself (every margin 0,
    the budget draws at random), round 2 the round-1 DPO policy against its reference; each push keeps 3 records."""
    from tests.loop.test_loop import loop_yaml

    generate = {
        "config": "configs/generate/default.yaml",
        "prompts": "recipes/brand_voice/prompts_train.jsonl",
        "max_prompts": 6,
        "engine": "hf",
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 12},
    }
    config = loop_yaml(
        tmp_path,
        tiny_model,
        argilla,
        "active",
        pairs={"selection": "dpo_margin"},
        generate=generate,
        push={"guidelines": "brand_voice", "annotators_per_record": 2, "max_records": 3},
    )
    assert main(["loop", "--config", str(config)]) == 0
    loop_dir = tmp_path / "active"

    def rows(run_dir, output):
        manifest = runs.read_manifest(run_dir)
        return manifest, [json.loads(l) for l in runs.output_path(run_dir, manifest, output).read_text().splitlines()]

    first, scored = rows(loop_dir / "round-1" / "score", "generations")
    assert first["metrics"]["policy_is_reference"] is True and all(set(r["logratios"]) == {0.0} for r in scored)
    second, scored = rows(loop_dir / "round-2" / "score", "generations")
    assert second["metrics"]["policy_is_reference"] is False
    assert second["notes"]["logratio_reference"] == str(tiny_model)  # round 1's DPO started from (and refers to) it
    assert any(x != 0.0 for r in scored for x in r["logratios"])
    for n in (1, 2):
        push, records = rows(loop_dir / f"round-{n}" / "push", "records")
        budget_report = push["metrics"]["budget"]
        assert budget_report["max_records"] == 3 and budget_report["kept"] == len(records) == 3
        assert budget_report["rule"] == "most_uncertain"
        _, pairs = rows(loop_dir / f"round-{n}" / "pairs", "pairs")
        kept = {int(r["input"].rsplit(":", 1)[1]) - 1 for r in records}
        assert min(pairs[i]["uncertainty"] for i in kept) >= max(
            p["uncertainty"] for i, p in enumerate(pairs) if i not in kept
        )
