import sys

from tools.loadgen import main

sys.exit(main())
