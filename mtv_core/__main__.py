"""``python -m mtv_core``: the pack's command line (see ``mtv_core.cli``)."""

from .cli import main

raise SystemExit(main())
