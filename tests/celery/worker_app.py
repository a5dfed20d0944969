"""The app a real ``celery worker`` subprocess (prefork pool) runs in the tests.

Configured from the environment the test sets. It does not mention TelemHQ at all: the
worker is monitored by ``TELEMHQ_CELERY_AUTO=1`` alone (the ``celery`` program imports
``telemhq_plugins.celery`` through its ``celery.commands`` entry point).
"""

from __future__ import annotations

import os

from celery import Celery

from tests.celery.tasks import configure, register

app = Celery("telemhq_tests")
configure(app, os.environ["TELEMHQ_TEST_BROKER"], os.environ["TELEMHQ_TEST_PREFIX"])
tasks = register(app, os.environ["TELEMHQ_TEST_SPECIAL_TOKEN"])
