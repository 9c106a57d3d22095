"""align: preference alignment and RLHF with the human feedback loop closed.

Importing `align` is cheap: torch, transformers, vLLM and Argilla are imported only by the stages
that use them.
"""

__version__ = "0.1.0"
