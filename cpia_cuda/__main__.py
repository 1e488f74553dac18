"""``python -m cpia_cuda``: the ``cpia`` command."""

from .cli import main

raise SystemExit(main())
