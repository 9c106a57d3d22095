"""Feedback after deployment: what users said about a served policy's replies, into the next round.

- `log`: the append-only feedback log `align serve` writes (replies and ratings), and id hashing;
- `rows`: the feedback format teams can also produce themselves, read, validated, redacted and deduped
  (`align feedback import`, align/stages/feedback.py), and the training data made from it (KTO examples
  from thumbs, DPO pairs from corrections);
- `proxy`: the logging proxy `align serve` puts in front of vLLM's OpenAI-compatible server;
- `drift`: thumbs-up share per policy run with Wilson intervals (`align feedback report`);
- `rate`, `report`: the `align feedback rate | report` commands (`align feedback review | reviewed`, which talk
  to Argilla, are align/annotate/review.py and review_pull.py).

The user guide is docs/guide/feedback.md.
"""
