import sys

from cil.cli import main

sys.exit(main())
