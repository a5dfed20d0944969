"""Core of telemhq-plugins: payload, assertions, config, delivery, hooks, runs and
provisioning (trackers and schedules through the management API).

Orchestrator adapters build on these names only; nothing here imports an orchestrator.
"""

from telemhq_plugins.core.assertions import (
    Assertion,
    AssertionResult,
    AssertionSyntaxError,
    evaluate_all,
    parse_assertion,
    parse_assertions,
)
from telemhq_plugins.core.config import (
    ConfigError,
    Settings,
    env_flag,
    load_settings,
    parse_flag,
    slugify,
)
from telemhq_plugins.core.delivery import Client, current_client, get_client, set_client
from telemhq_plugins.core.extras import missing_extra
from telemhq_plugins.core.hookspecs import hookimpl
from telemhq_plugins.core.instrumentor import Instrumentor, UnsupportedOrchestrator, check_version
from telemhq_plugins.core.logs import capture_internal_errors, log_once, redact_url
from telemhq_plugins.core.once import OnceSet
from telemhq_plugins.core.payload import (
    STATUSES,
    ErrorInfo,
    Ping,
    PingSource,
    Status,
    stable_ping_id,
)
from telemhq_plugins.core.plugins import plugin_manager
from telemhq_plugins.core.policy import JobPolicy, matches, policy_from_kwargs, resolve_policy
from telemhq_plugins.core.provision import JobSchedule, ScheduleSync, SyncResult, sync
from telemhq_plugins.core.results import DeliveryResult
from telemhq_plugins.core.runs import (
    Run,
    RunFinder,
    Target,
    add_run_finder,
    current_run,
    monitor,
    monitored,
    remove_run_finder,
    report,
    resolve_target,
    run,
    start_run,
)
from telemhq_plugins.core.targets import TargetCache

__all__ = [
    "STATUSES",
    "Assertion",
    "AssertionResult",
    "AssertionSyntaxError",
    "Client",
    "ConfigError",
    "DeliveryResult",
    "ErrorInfo",
    "Instrumentor",
    "JobPolicy",
    "JobSchedule",
    "OnceSet",
    "Ping",
    "PingSource",
    "Run",
    "RunFinder",
    "ScheduleSync",
    "Settings",
    "Status",
    "SyncResult",
    "Target",
    "TargetCache",
    "UnsupportedOrchestrator",
    "add_run_finder",
    "capture_internal_errors",
    "check_version",
    "current_client",
    "current_run",
    "env_flag",
    "evaluate_all",
    "get_client",
    "hookimpl",
    "load_settings",
    "log_once",
    "matches",
    "missing_extra",
    "monitor",
    "monitored",
    "parse_assertion",
    "parse_assertions",
    "parse_flag",
    "plugin_manager",
    "policy_from_kwargs",
    "redact_url",
    "remove_run_finder",
    "report",
    "resolve_policy",
    "resolve_target",
    "run",
    "set_client",
    "slugify",
    "stable_ping_id",
    "start_run",
    "sync",
]
