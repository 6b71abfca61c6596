import sys

from clove.cli.main import main

sys.exit(main())
