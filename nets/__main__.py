import sys

from nets.cli import main

sys.exit(main())
