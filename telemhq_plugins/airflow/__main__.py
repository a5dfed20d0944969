"""``python -m telemhq_plugins.airflow sync``: the DAGs folder's schedules to their trackers.

For deploy pipelines: parses the DAGs folder (Airflow's ``[core] dags_folder``, or
``--dags-folder``) and syncs the schedule of every DAG reported at DAG level
(``dag_callbacks()``, or the listener's include/exclude when the plugin is on; ``--all``:
every DAG). Needs ``TELEMHQ_API_KEY`` (or the ``telemhq_default`` connection's ``api_key``).
Prints one line per DAG; exits 1 when a DAG could not be synced.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m telemhq_plugins.airflow")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("sync", help="sync DAG schedules to TelemHQ trackers")
    command.add_argument("--dags-folder", help="default: Airflow's [core] dags_folder")
    command.add_argument("--all", action="store_true", help="every DAG, reported or not")
    command.add_argument("--dry-run", action="store_true", help="show changes, write nothing")
    command.add_argument(
        "--prune", action="store_true", help="pause trackers of DAGs that are gone"
    )
    args = parser.parse_args(argv)

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0 kept it among the models
        from airflow.models.dagbag import DagBag

    from telemhq_plugins.airflow import conf
    from telemhq_plugins.airflow.listener import TelemHQListener
    from telemhq_plugins.airflow.schedules import sync_dags

    bag = DagBag(dag_folder=args.dags_folder)
    for path, error in sorted(bag.import_errors.items()):
        print(f"import error in {path}: {error.strip().splitlines()[-1]}", file=sys.stderr)
    listener = TelemHQListener(include=conf.include(), exclude=conf.exclude())
    state = sync_dags(
        bag.dags.values(),
        listener_options=listener.options if conf.auto() else None,
        every_dag=args.all,
        background=False,
        dry_run=args.dry_run,
        prune=args.prune,
    )
    failed = False
    for result in state.results:
        detail = f": {result.detail}" if result.detail else ""
        print(f"{result.job}: {result.outcome}{detail}")
        failed = failed or result.outcome == "error"
    if not state.results:
        print("no DAG reported at DAG level (dag_callbacks(), or TELEMHQ_AIRFLOW_AUTO=1)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
