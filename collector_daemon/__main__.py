"""``python -m collector_daemon``: same as the ``crypto-lake-collector`` entry point."""

import sys

from collector_daemon.cli import main

sys.exit(main())
