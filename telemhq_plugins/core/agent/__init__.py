"""The local agent: a long-lived process on the job's machine that takes pings from local
processes over a Unix socket, acknowledges each once it is on disk, and owns their delivery.

* :mod:`~telemhq_plugins.core.agent.protocol`: the frames on the socket;
* :mod:`~telemhq_plugins.core.agent.paths`: the default socket and spool paths;
* :mod:`~telemhq_plugins.core.agent.handoff`: the client's side (``TELEMHQ_AGENT``);
* :mod:`~telemhq_plugins.core.agent.server`: the agent itself (``telemhq agent``).

This package imports nothing at import time, so the client's hand-off does not pull in the
agent's server (see ``docs/agent.md``).
"""
