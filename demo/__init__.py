"""``make demo``: the reference server and monitored jobs against it (``python -m demo``)."""
