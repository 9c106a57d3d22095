"""Personal data kept away from annotators and datasets: see `redact.py`."""
