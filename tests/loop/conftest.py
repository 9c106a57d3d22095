"""Evaluate-policy manifests made by evaluate policy's own `set_metrics` from hand-made per-prompt rows."""

from __future__ import annotations

from align.stages.evaluate_policy import STAGE, BootstrapSettings, set_metrics


def rows(policy_refusals, baseline_refusals, policy_brand=None, baseline_brand=None, rewards=None):
    """Per-prompt rows as evaluate policy's `_judge` writes them."""
    out = []
    for i, (p, b) in enumerate(zip(policy_refusals, baseline_refusals)):
        row = {
            "policy": {"refusal": "refusal" if p else "compliance", "words": 30 + i},
            "baseline": {"refusal": "refusal" if b else "compliance", "words": 40 + i},
        }
        if policy_brand is not None:
            row["policy"].update(brand_score=policy_brand[i], brand_rules={"greeting": policy_brand[i]})
            row["baseline"].update(brand_score=baseline_brand[i], brand_rules={"greeting": baseline_brand[i]})
        if rewards is not None:
            row["policy"]["reward"], row["baseline"]["reward"] = rewards[i]
            row["policy_wins"] = (
                1.0 if rewards[i][0] > rewards[i][1] else 0.5 if rewards[i][0] == rewards[i][1] else 0.0
            )
        out.append(row)
    return out


def manifest(**sets) -> dict:
    boot = BootstrapSettings(resamples=200)
    return {"stage": STAGE, "metrics": {name: set_metrics(r, boot) for name, r in sets.items()}}
