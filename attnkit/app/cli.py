"""The `attnkit` command, importable from the library: `attnkit.app.cli.main`.

The command itself lives in the `attnkit_cli` package, which parses its
options without importing keras (so `attnkit --help` answers at once);
`python -m attnkit.app.cli ARGS` runs it too.
"""

import sys

from attnkit_cli import CommandError
from attnkit_cli import main
from attnkit_cli import parser

__all__ = ["CommandError", "main", "parser"]

if __name__ == "__main__":
    sys.exit(main())
