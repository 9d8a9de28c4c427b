"""`python -m abaw` is the same as the `abaw` console script."""

from abaw.cli import main

raise SystemExit(main())
