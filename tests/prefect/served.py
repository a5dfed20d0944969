"""A flow served by ``flow.serve()`` (runs in a subprocess of the runner), for the
cancellation test: the runner calls ``on_cancellation`` in its own process."""

from __future__ import annotations

import time

from prefect import flow

from telemhq_plugins.prefect import hooks


@flow(name="served-sleeper", **hooks())
def served_sleeper() -> None:
    time.sleep(120)


if __name__ == "__main__":
    served_sleeper.serve(name="sleeper")
