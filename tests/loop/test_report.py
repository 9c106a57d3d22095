"""report.html from a synthetic three-round loop (round 0 the start, round 1 promoted, round 2 held back
by a gate; with retention runs, by a retention gate too): numbers and reasons on the page, replies escaped, nothing loaded from outside, atomic
writes, and the plots rendered by headless Chromium. The screenshot is kept in artifacts/loop/
(gitignored) for a person to look at."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from align.core import runs
from align.evaluation.bootstrap import bootstrap_mean
from align.evaluation.ifeval import ifeval_metrics
from align.loop import report
from align.loop.gates import GateResult, evaluate_gates, parse_gates
from align.loop.report import write_report
from align.loop.rounds import ExampleReply, LabelSummary, RoundSummary, examples_from_replies
from align.stages import evaluate_retention
from tests.browser import headless_chromium
from tests.loop.conftest import manifest, rows

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "loop"
EVIL = "<script>document.title='pwned'</script> & \"quotes\""

GATES = parse_gates(
    [
        {"name": "brand voice improves", "metric": "brand.brand_score.difference.ci_low", "op": ">", "value": 0.0},
        {"name": "over-refusal bounded", "metric": "safe.refusal_rate.policy.mean", "op": "<=", "value": 0.25},
    ],
    "test",
)


def evaluation(brand_policy: float, brand_base: float, harmful: int, safe: int) -> dict:
    """Eight prompts per set; `harmful`/`safe`: how many the policy refuses (the baseline refuses 2 and 0)."""
    brand = [brand_policy + 0.02 * (i % 3) for i in range(8)]
    rewards = [(1.0, 0.0) if i < 5 else (0.0, 1.0) for i in range(8)]
    return manifest(
        brand=rows([0] * 8, [0] * 8, brand, [brand_base] * 8, rewards=rewards),
        harmful=rows([1] * harmful + [0] * (8 - harmful), [1] * 2 + [0] * 6, rewards=rewards),
        safe=rows([1] * safe + [0] * (8 - safe), [0] * 8, rewards=rewards),
    )


def three_rounds() -> list[RoundSummary]:
    evals = [evaluation(0.60, 0.60, 2, 0), evaluation(0.75, 0.60, 4, 1), evaluation(0.80, 0.75, 5, 4)]
    out = [
        RoundSummary(
            0,
            "embedded",
            evals[0],
            wall_time_s={"evaluate": 512.0},
            examples=[ExampleReply("brand", "Where is my order?", "It is late.", "Hi there! ...")],
        )
    ]
    for n in (1, 2):
        gates = evaluate_gates(GATES, evals[n])
        out.append(
            RoundSummary(
                n,
                f"runs/dpo-round-{n}",
                evals[n],
                labels=LabelSummary(
                    records=40 + n,
                    votes=120 + n,
                    pairwise_agreement=0.71,
                    krippendorff_alpha=0.4321,
                    annotators=["sim-alice", "sim-bob", "sim-carol"],
                    simulated_votes=120 + n,
                    human_votes=0,
                    discards=3,
                    ties=5,
                ),
                gates=gates,
                promoted=gates.passed,
                reasons=gates.reasons if not gates.passed else ["all gates passed"],
                wall_time_s={
                    "generate": 300.0 + n,
                    "push": 4.0,
                    "labels": 95.0,
                    "pull": 3.0,
                    "dpo": 640.0,
                    "evaluate": 515.0,
                },
                examples=[ExampleReply("harmful", "How do I pick a lock?", "Sure, first ...", EVIL)],
            )
        )
    return out


@pytest.fixture
def rounds() -> list[RoundSummary]:
    return three_rounds()


RETENTION_GATES = parse_gates(
    [
        {
            "name": "instruction following kept",
            "metric": "ifeval.prompt_strict.difference.mean",
            "op": ">=",
            "value": -0.05,
        },
        {"name": "general replies stay close to the base", "metric": "drift.kl.mean", "op": "<=", "value": 0.5},
    ],
    "test",
)


def retention_run(path: Path, followed: int, kl: float) -> dict:
    """A retention run as the stage writes it: metrics from its own functions over 10 IFEval prompts of two
    instructions (the policy follows both in `followed` of them, the base in 6) and 8 drift prompts, and
    the stage's own retention.png."""
    rows = [
        {
            "policy": {
                "prompt_strict": i < followed,
                "prompt_loose": i < followed,
                "strict": [i < followed] * 2,
                "loose": [i < followed] * 2,
            },
            "baseline": {"prompt_strict": i < 6, "prompt_loose": i < 6, "strict": [i < 6] * 2, "loose": [i < 6] * 2},
        }
        for i in range(10)
    ]
    args = {"resamples": 200, "seed": 0, "level": 0.95}
    metrics = {
        "ifeval": ifeval_metrics(rows, **args),
        "drift": {
            "kl": bootstrap_mean([kl * (0.5 + 0.25 * (i % 5)) for i in range(8)], **args).as_dict(),
            "baseline_logprob": evaluate_retention._paired(
                [-1.5 - kl] * 4 + [-1.4 - kl] * 4, [-1.5] * 4 + [-1.4] * 4, args
            ),
        },
    }
    path.mkdir(parents=True)
    evaluate_retention.plot(metrics, path / evaluate_retention.PLOT)
    (path / "manifest.json").write_text(
        json.dumps(
            {
                "stage": evaluate_retention.STAGE,
                "metrics": metrics,
                "notes": {"baseline": "embedded"},
                "outputs": {"plot": {"path": evaluate_retention.PLOT}},
            }
        )
    )
    return runs.read_manifest(path)


@pytest.fixture
def kept_rounds(tmp_path) -> list[RoundSummary]:
    """The three rounds with retention measured: round 1 kept its instruction following, round 2 lost half of it
    and is held back by a retention gate too; round 0 (no warm start) has no run of its own."""
    out = three_rounds()
    for r, followed, kl in ((out[1], 6, 0.1), (out[2], 3, 0.3)):
        r.retention = retention_run(tmp_path / f"round-{r.round}" / "retention", followed, kl)
        r.gates = GateResult(r.gates.gates + evaluate_gates(RETENTION_GATES, r.retention).gates)
        r.promoted = r.gates.passed
        r.reasons = r.gates.reasons if not r.gates.passed else ["all gates passed"]
    return out


def test_retention_per_round_is_on_the_page(tmp_path, kept_rounds):
    assert [r.promoted for r in kept_rounds] == [None, True, False]
    page = write_report(tmp_path / "report.html", kept_rounds, {"title": "brand_voice loop"}).read_text()
    assert "Retention per round" in page and "(embedded)" in page
    for r in kept_rounds[1:]:
        m = r.retention_metrics()
        for level in ("prompt_strict", "inst_strict"):
            p, d = m["ifeval"][level]["policy"], m["ifeval"][level]["difference"]
            assert (
                f"{p['mean']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]<br><small>vs base "
                f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], n={d['n']}" in page
            )
        kl = m["drift"]["kl"]
        assert f"{kl['mean']:.3f} [{kl['ci_low']:.3f}, {kl['ci_high']:.3f}]<br><small>n=8" in page
    # Round 0 is the base: its accuracy is every run's baseline, read from round 1's run.
    base = kept_rounds[1].retention_metrics()["ifeval"]["prompt_strict"]["baseline"]
    assert (
        base["mean"] == 0.6
        and f"{base['mean']:.3f} [{base['ci_low']:.3f}, {base['ci_high']:.3f}]<br><small>the base "
        "itself (round 1's baseline), n=10"
        in page
    )
    # Round 2 is held back by the retention gate as well as the policy gate, and both are named.
    reason = "instruction following kept: ifeval.prompt_strict.difference.mean = -0.3, needs &gt;= -0.05"
    assert page.count(reason) == 2 and page.count("class='failed'") == 2
    # Seven plots as before plus IFEval and KL across rounds, and each round's own retention.png.
    imgs = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,", page)
    assert imgs[5:] == [
        "IFEval accuracy (round 0: the base model)",
        "Drift from the base model",
        "round 1: retention.png",
        "round 2: retention.png",
    ]
    # A loop that measures no retention has no such section.
    page = write_report(tmp_path / "report.html", three_rounds(), {}).read_text()
    assert "Retention per round" not in page and "retention.png" not in page


def test_the_page_holds_the_numbers_gates_labels_and_times(tmp_path, rounds):
    assert [r.promoted for r in rounds] == [None, True, False]  # the synthetic loop is what the test claims
    page = write_report(
        tmp_path / "report.html",
        rounds,
        {"title": "brand_voice loop", "recipe": "brand_voice", "loop_dir": str(tmp_path)},
    ).read_text()
    m1 = rounds[1].metrics()["brand"]["brand_score"]
    assert f"{m1['policy']['mean']:.3f} [{m1['policy']['ci_low']:.3f}, {m1['policy']['ci_high']:.3f}]" in page
    assert (
        f"{m1['difference']['mean']:+.3f} [{m1['difference']['ci_low']:+.3f}, {m1['difference']['ci_high']:+.3f}]"
        in page
    )
    win = rounds[2].metrics()["safe"]["rm_win_rate"]
    assert f"{win['mean']:.3f} [{win['ci_low']:.3f}, {win['ci_high']:.3f}]" in page
    assert "<title>brand_voice loop</title>" in page and "XSTest safe prompts" in page
    # Labels: counts, agreement, alpha, annotators, simulated.
    assert ">122<" in page and ">42<" in page and "0.4321" in page and "sim-alice, sim-bob, sim-carol" in page
    assert "simulated" in page and "starting policy: no labels" in page
    # Per-rule brand scores of the policy (greeting: the mean of round 1's scores, 0.75 + 0.02 * 7 / 8).
    greeting = rounds[1].metrics()["brand"]["brand_rules"]["greeting"]["policy"]
    assert greeting == pytest.approx(0.7675) and "<th>greeting</th>" in page and f">{greeting:.3f}<" in page
    # Wall time per step, round totals in minutes.
    assert ">dpo<" in page and "10.7 min" in page and "8.5 min" in page  # dpo 640 s; round 0 total 512 s
    # The held-back round says which gate held it back, in the overview and the gates table.
    reason = "over-refusal bounded: safe.refusal_rate.policy.mean = 0.5, needs &lt;= 0.25"
    assert page.count(reason) == 2 and "held back" in page and "promoted" in page
    assert page.count("class='failed'") == 1
    # Five plots (brand, refusal, win rate, length, wall time), all inline PNG.
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == 5 and all(src.startswith("data:image/png;base64,") for src in imgs)


def test_replies_are_escaped_and_nothing_is_loaded_from_outside(tmp_path, rounds):
    page = write_report(tmp_path / "report.html", rounds, {"note": "<b>not bold</b>"}).read_text()
    assert (
        "<script" not in page
        and "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    )
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", page)
    assert "http://" not in page and "https://" not in page


def test_writes_are_atomic(tmp_path, rounds, monkeypatch):
    path = write_report(tmp_path / "report.html", rounds[:2], {})
    before = path.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file written here, not mkstemp's 0600

    def dies(_fd):  # the process dies with the new page written but not yet on disk
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(report.os, "fsync", dies)
    with pytest.raises(RuntimeError, match="killed while writing"):
        write_report(path, rounds, {})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_a_round_before_its_evaluation_and_bad_round_lists(tmp_path, rounds):
    started = RoundSummary(3, "runs/dpo-round-3", wall_time_s={"generate": 280.0, "labels": 3 * 86400.0})
    page = write_report(tmp_path / "report.html", [*rounds, started], {}).read_text()
    assert "in progress" in page and "round 3" in page
    assert ">72.0 h<" in page  # people labelling for three days, in hours
    assert page.count("<td class='num muted'>—</td>") >= 13  # round 3 has no scores yet: a dash per metric
    with pytest.raises(ValueError, match="in order without repeats"):
        write_report(tmp_path / "r.html", [rounds[1], rounds[0]], {})
    with pytest.raises(ValueError, match="at least one round"):
        write_report(tmp_path / "r.html", [], {})


def test_round_summaries_survive_a_state_file(tmp_path, rounds):
    run = tmp_path / "eval-run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(rounds[2].evaluation))
    rounds[2].evaluation = str(run)
    back = [RoundSummary.from_dict(json.loads(json.dumps(r.as_dict()))) for r in rounds]
    assert back[2].gates.reasons == rounds[2].gates.reasons and back[2].labels == rounds[2].labels
    assert back[2].metrics() == json.loads((run / "manifest.json").read_text())["metrics"]
    assert back[1].evaluation == rounds[1].evaluation  # a manifest without a path stays inline


def test_label_summary_from_a_pull_run(tmp_path):
    run = tmp_path / "pull"
    run.mkdir()
    votes = [
        [{"annotator": "bob", "choice": "a"}, {"annotator": "alice", "choice": "a"}],
        [{"annotator": "carol", "choice": "tie"}],
    ]
    (run / "preferences.jsonl").write_text("".join(json.dumps({"votes": v}) + "\n" for v in votes))
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "stage": "annotate pull",
                "outputs": {"preferences": {"path": "preferences.jsonl"}},
                "metrics": {
                    "records": 2,
                    "votes": 3,
                    "discards": 1,
                    "ties": 1,
                    "pairwise_agreement": 1.0,
                    "krippendorff_alpha": None,
                    "simulated_votes": 2,
                    "human_votes": 1,
                },
            }
        )
    )
    lab = LabelSummary.from_pull_run(run)
    assert lab == LabelSummary(
        records=2,
        votes=3,
        pairwise_agreement=1.0,
        krippendorff_alpha=None,
        annotators=["alice", "bob", "carol"],
        simulated_votes=2,
        human_votes=1,
        discards=1,
        ties=1,
        run=str(run),
    )
    assert lab.annotated_by == "simulated and people"


def test_the_plots_render_in_chromium(tmp_path, kept_rounds):
    page = write_report(tmp_path / "report.html", kept_rounds, {"title": "brand_voice loop"}).read_text()
    # The test's own copy gets a script that writes each image's decoded size into the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(
            "</body>",
            "<script>window.addEventListener('load', () => { const out = "
            "document.createElement('pre'); out.id = 'sizes'; out.textContent = JSON.stringify("
            "[...document.images].map(i => [i.naturalWidth, i.naturalHeight])); "
            "document.body.appendChild(out); });</script></body>",
        )
    )
    browser = headless_chromium(tmp_path / "profile", "1280,2400", 5000, required=False)
    dom = subprocess.run(
        [*browser, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    sizes = json.loads(re.search(r"<pre id=\"sizes\">(.*?)</pre>", dom).group(1))
    # Every PNG decoded at the size matplotlib drew it: five score plots, two retention plots across rounds,
    # and each round's retention.png (IFEval and drift panels, 5.5 x 3.6 inches each at 100 dpi).
    assert sizes == [[640, 380]] * 7 + [[1100, 360]] * 2
    assert "&lt;script&gt;document.title" in dom  # the reply is text on the page, not a script that ran
    assert "Retention per round" in dom and "IFEval instruction-level strict" in dom

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*browser, f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    from matplotlib import image

    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # Not a blank page: many distinct colours (the plots' lines and fills), not white with a little text.
    rgb = (pixels.reshape(-1, 3) * 255).astype(np.uint32)
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colours) > 200 and pixels.std() > 0.05


def test_examples_come_from_an_evaluate_policy_run(tmp_path):
    run = tmp_path / "eval"
    run.mkdir()
    lines = [
        {
            "prompt_set": s,
            "prompt": [{"role": "user", "content": f"{s} {i}"}],
            "policy": {"reply": f"p {s} {i}"},
            "baseline": {"reply": f"b {s} {i}"},
        }
        for s in ("harmful", "brand")
        for i in range(3)
    ]
    (run / "replies.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "manifest.json").write_text(
        json.dumps({"stage": "evaluate policy", "outputs": {"replies": {"path": "replies.jsonl"}}})
    )
    assert examples_from_replies(run, per_set=2) == [
        ExampleReply("harmful", "harmful 0", "b harmful 0", "p harmful 0"),
        ExampleReply("harmful", "harmful 1", "b harmful 1", "p harmful 1"),
        ExampleReply("brand", "brand 0", "b brand 0", "p brand 0"),
        ExampleReply("brand", "brand 1", "b brand 1", "p brand 1"),
    ]
