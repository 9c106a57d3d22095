"""benchmarks/feedback_vs_pairs.py on two small loop directories written here: the figures it copies from the
evaluate manifests, the paired feedback - pairs difference it computes (worked by hand), the labels it reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = {"resamples": 200, "seed": 0, "level": 0.95}


def _bench():
    spec = importlib.util.spec_from_file_location("feedback_vs_pairs", ROOT / "benchmarks" / "feedback_vs_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _iv(mean):
    return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": 2}


def _loop(root: Path, brand: list[float], refused: list[bool], trained: str, manifest_brand_mean=None) -> Path:
    """A finished one-round loop: base brand scores 0.4 and 0.6, the policy's as given; the same for refusals."""
    rnd = root / "round-1"
    steps = {s: {"status": "done", "wall_time_s": 10.0} for s in ("evaluate", trained)}
    steps.update(
        {s: {"status": "done", "wall_time_s": 1.0} for s in (("pull", "labels") if trained == "dpo" else ("feedback",))}
    )
    _write(root / "loop.json", {"rounds": [{"round": 0}, {"round": 1, "steps": steps, "promoted": False}]})
    rows = []
    for i, (score, ref) in enumerate(zip(brand, refused)):
        base = {"reply": f"base {i}", "brand_score": [0.4, 0.6][i], "refusal": "compliance"}
        rows.append(
            {
                "prompt_set": "brand",
                "prompt_id": f"b{i}",
                "policy": {"reply": "x", "brand_score": score, "refusal": "refusal" if ref else "compliance"},
                "baseline": base,
            }
        )
        for kind in ("harmful", "safe"):
            rows.append(
                {
                    "prompt_set": kind,
                    "prompt_id": f"{kind}{i}",
                    "baseline": {**base, "reply": f"{kind} {i}"},
                    "policy": {"reply": "y", "brand_score": None, "refusal": "refusal" if ref else "compliance"},
                }
            )
    (rnd / "evaluate").mkdir(parents=True)
    (rnd / "evaluate" / "replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mean_brand = sum(brand) / 2 if manifest_brand_mean is None else manifest_brand_mean
    refusal = {"policy": _iv(sum(refused) / 2), "baseline": _iv(0.0), "difference": _iv(sum(refused) / 2)}
    _write(
        rnd / "evaluate" / "manifest.json",
        {
            "config": {"bootstrap": BOOTSTRAP, "sampling": {"temperature": 0.0}},
            "metrics": {
                "brand": {
                    "brand_score": {
                        "policy": _iv(mean_brand),
                        "baseline": _iv(0.5),
                        "difference": _iv(mean_brand - 0.5),
                    }
                },
                "harmful": {"refusal_rate": refusal},
                "safe": {"refusal_rate": refusal},
            },
        },
    )
    if trained == "dpo":
        _write(rnd / "pull" / "manifest.json", {"metrics": {"records": 6, "votes": 18, "ties": 2, "discards": 0}})
        _write(rnd / "labels" / "manifest.json", {"metrics": {"usable_pairs": 4}})
    else:
        _write(
            rnd / "feedback" / "manifest.json",
            {"metrics": {"usable_pairs": 10, "by_origin": {"thumbs": 10}, "desirable": 6, "undesirable": 4}},
        )
        _write(
            rnd / "kto" / "manifest.json",
            {"config": {"training": {"desirable_weight": 1.0, "undesirable_weight": 1.1667}}},
        )
    return root


def test_paired_difference_and_labels(tmp_path):
    pairs = _loop(tmp_path / "a", [0.5, 0.7], [False, False], "dpo")
    feedback = _loop(tmp_path / "b", [0.6, 0.9], [True, False], "kto")
    out = tmp_path / "out.json"
    assert _bench().main(["--pairs", str(pairs), "--feedback", str(feedback), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    brand = result["metrics"]["brand_score"]
    # feedback - pairs per prompt: 0.6 - 0.5 = 0.1 and 0.9 - 0.7 = 0.2; mean 0.15, every resample within [0.1, 0.2].
    assert brand["feedback_minus_pairs"]["mean"] == pytest.approx(0.15)
    assert (
        0.1 - 1e-9 <= brand["feedback_minus_pairs"]["ci_low"] <= brand["feedback_minus_pairs"]["ci_high"] <= 0.2 + 1e-9
    )
    assert brand["pairs_round"]["mean"] == pytest.approx(0.6) and brand["feedback_round"]["mean"] == pytest.approx(0.75)
    assert result["metrics"]["harmful_refusal"]["feedback_minus_pairs"]["mean"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert result["base_replies_identical"] == {"brand": True, "harmful": True, "safe": True}
    assert result["labels"]["pairs"]["usable_pairs"] == 4 and result["labels"]["pairs"]["votes"] == 18
    assert result["labels"]["feedback"]["thumbs_up"] == 6 and result["labels"]["feedback"]["thumbs_down"] == 4
    assert result["wall_time_s"]["pairs"]["round_total"] == pytest.approx(22.0)


def test_replies_that_disagree_with_the_manifest_are_refused(tmp_path):
    pairs = _loop(tmp_path / "a", [0.5, 0.7], [False, False], "dpo", manifest_brand_mean=0.9)
    feedback = _loop(tmp_path / "b", [0.6, 0.9], [True, False], "kto")
    with pytest.raises(SystemExit, match="replies.jsonl"):
        _bench().main(["--pairs", str(pairs), "--feedback", str(feedback), "--out", str(tmp_path / "out.json")])


def test_an_unfinished_loop_is_an_error(tmp_path):
    _write(tmp_path / "a" / "loop.json", {"rounds": [{"round": 0}]})
    with pytest.raises(SystemExit, match="not been evaluated"):
        _bench().main(["--pairs", str(tmp_path / "a"), "--feedback", str(tmp_path / "a"), "--out", str(tmp_path / "o")])
