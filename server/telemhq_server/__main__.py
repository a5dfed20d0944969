"""``python -m telemhq_server`` is ``telemhq-server``."""

from telemhq_server.cli import main

raise SystemExit(main())
