"""``python -m bitnet.cli``: the same as the ``bitnet`` command."""

import sys

from bitnet.cli.main import main

sys.exit(main())
