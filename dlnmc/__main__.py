import sys

from dlnmc.cli import main

sys.exit(main())
