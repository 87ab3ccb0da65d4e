import sys

from nets.app.cli import main

sys.exit(main())
