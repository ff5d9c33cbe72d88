import sys

from shared.app.cli import main

sys.exit(main())
