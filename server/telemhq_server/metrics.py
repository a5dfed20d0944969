"""Prometheus metrics for ``/metrics``: a few counters and one histogram, in-process.

Kept dependency-free and cheap on the ping path (a dict increment, a bisect). Each server
process exposes its own figures; scrape every process (or sum them) as usual with Prometheus.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import Final

__all__ = ["Metrics"]

#: Ingest latency buckets, seconds.
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.batches = 0
        self.batch_pings = 0
        self.batch_seconds = 0.0
        self.commit_seconds = 0.0
        self.latency_counts = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self._lock = threading.Lock()  # only for the rare writes from other threads

    def accept(self, status: str, seconds: float) -> None:
        self.accepted[status] = self.accepted.get(status, 0) + 1
        self.latency_counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def batch(self, size: int, seconds: float, commit_seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batch_pings += size
            self.batch_seconds += seconds
            self.commit_seconds += commit_seconds

    def render(self, extra: Iterable[str] = ()) -> str:
        lines = [
            "# HELP telemhq_pings_accepted_total Pings recorded (or answered as duplicates).",
            "# TYPE telemhq_pings_accepted_total counter",
        ]
        lines += [
            f'telemhq_pings_accepted_total{{status="{s}"}} {n}'
            for s, n in sorted(self.accepted.items())
        ]
        lines += [
            "# HELP telemhq_pings_rejected_total Pings refused, by reason.",
            "# TYPE telemhq_pings_rejected_total counter",
        ]
        lines += [
            f'telemhq_pings_rejected_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.rejected.items())
        ]
        lines += [
            "# HELP telemhq_ingest_latency_seconds Time from request to answer of accepted pings.",
            "# TYPE telemhq_ingest_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(BUCKETS, self.latency_counts, strict=False):
            cumulative += count
            lines.append(f'telemhq_ingest_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self.latency_counts[-1]
        lines.append(f'telemhq_ingest_latency_seconds_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"telemhq_ingest_latency_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"telemhq_ingest_latency_seconds_count {cumulative}")
        lines += [
            "# HELP telemhq_write_batches_total Group-commit transactions.",
            "# TYPE telemhq_write_batches_total counter",
            f"telemhq_write_batches_total {self.batches}",
            "# HELP telemhq_write_batch_pings_total Pings written by those transactions.",
            "# TYPE telemhq_write_batch_pings_total counter",
            f"telemhq_write_batch_pings_total {self.batch_pings}",
            "# HELP telemhq_write_seconds_total Time spent in group-commit transactions.",
            "# TYPE telemhq_write_seconds_total counter",
            f"telemhq_write_seconds_total {self.batch_seconds:.6f}",
            "# HELP telemhq_commit_seconds_total Of which in COMMIT (the durable flush).",
            "# TYPE telemhq_commit_seconds_total counter",
            f"telemhq_commit_seconds_total {self.commit_seconds:.6f}",
        ]
        lines.extend(extra)
        return "\n".join(lines) + "\n"
