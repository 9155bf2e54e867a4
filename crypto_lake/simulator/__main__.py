"""``python -m crypto_lake.simulator``: see cli.py."""

from crypto_lake.simulator.cli import main

raise SystemExit(main())
