import sys

from attnkit_cli import main

sys.exit(main())
