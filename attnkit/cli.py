"""Moved to `attnkit.app.cli`; this path warns, and goes in attnkit 0.3.
`python -m attnkit.cli ARGS` still runs the command."""

import sys

if __name__ == "__main__":
    from attnkit_cli import main

    sys.exit(main())

from attnkit._moved import alias  # noqa: E402

alias(__name__, "attnkit.app.cli")
