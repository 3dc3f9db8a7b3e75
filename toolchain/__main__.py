"""`python -m toolchain` is the `edgeq` command."""

from toolchain.cli import main

raise SystemExit(main())
