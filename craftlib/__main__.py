import sys

from craftlib.workshop.cli import main

sys.exit(main())
