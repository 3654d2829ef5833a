import sys

from pusher.cli import main

sys.exit(main())
