"""``missing_extra``: what an adapter's ImportError says when its orchestrator is missing.

Each adapter package imports its orchestrator first (its ``_orchestrator.py``) and, when that
fails, raises an ImportError that says which extra of telemhq-plugins brings it, with install
commands that work for how the project is distributed (it is not on PyPI): from a source
checkout, or from the wheel ``make dist`` builds::

    try:
        import acme  # noqa: F401
    except ImportError as exc:
        raise ImportError(missing_extra("telemhq_plugins.acme", "Acme", "acme")) from exc
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(package: str, orchestrator: str, extra: str) -> str:
    """The message for ``package`` (an adapter) whose ``orchestrator`` is not installed."""
    return (
        f"{package} needs {orchestrator}, which is not installed. Install telemhq-plugins "
        f'with its "{extra}" extra: pip install ".[{extra}]" from a checkout, or '
        f'pip install "./dist/<wheel>[{extra}]" after make dist'
    )
