import sys

from edgerep.cli import main

sys.exit(main())
