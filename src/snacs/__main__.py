import sys

from snacs.cli import main

sys.exit(main())
