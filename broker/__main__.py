"""`python -m broker` is `token-broker`."""

from broker.cli import main

raise SystemExit(main())
