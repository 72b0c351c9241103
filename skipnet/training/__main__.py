# `python -m skipnet.training ...` - the form torchrun needs: torchrun --nproc_per_node 2 -m skipnet.training ...
import sys

from .cli import main

sys.exit(main())
