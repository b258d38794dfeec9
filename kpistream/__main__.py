import sys

from kpistream.shell.cli import main

sys.exit(main())
