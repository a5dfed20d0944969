"""Calls ``on_crashed`` of ``hooks()`` as Prefect's runner does: by keyword, in a process where
the run does not execute, for a deployed run (``argv``: flow name, flow run id, deployment id).
Prints how long the hook took, as JSON. The test points ``PREFECT_API_URL`` where no Prefect
API answers."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid

from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed

from telemhq_plugins.prefect import hooks


def main() -> None:
    name, run_id, deployment_id = sys.argv[1:4]
    options = hooks()

    @flow(name=name, **options)
    def deployed() -> None:
        pass

    flow_run = FlowRun(
        id=uuid.UUID(run_id),
        name="runner-side",
        flow_id=uuid.uuid4(),
        deployment_id=uuid.UUID(deployment_id),
        run_count=1,
        start_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
    )
    [hook] = options["on_crashed"]
    started = time.monotonic()
    hook(flow=deployed, flow_run=flow_run, state=Crashed(message="the process exited -9"))
    print(json.dumps({"hook_seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
