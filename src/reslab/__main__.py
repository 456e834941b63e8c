"""`python -m reslab ...`, and `torchrun --nproc_per_node N -m reslab train ...` for data-parallel runs."""

import sys

from .cli import main

sys.exit(main())
