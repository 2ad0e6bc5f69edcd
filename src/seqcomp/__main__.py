import sys

from seqcomp.cli import main

sys.exit(main())
