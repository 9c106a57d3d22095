"""Feedback after deployment: what users said about a served policy's replies, into the next round.

- `log`: the append-only feedback log `align serve` writes (replies and ratings), and id hashing;
- `rows`: the feedback format teams can also produce themselves, read, validated, redacted and deduped
  (`align feedback import`, align/stages/feedback.py), and the training data made from it (KTO examples
  from thumbs, DPO pairs from corrections);
- `proxy`: the logging proxy `align serve` puts in front of vLLM's OpenAI-compatible server;
- `drift`: thumbs-up share per policy run with Wilson intervals (`align feedback report`);
- `rate`, `report`, `review`: the `align feedback rate | report | review push | review pull` commands.

The user guide is docs/guide/feedback.md.
"""
