"""``python -m fastrm_bench.examples [DIR]``: draw the example images again (default: into the package)."""

import sys

from fastrm_bench.examples import FOLDER, write

for written in write(sys.argv[1] if len(sys.argv) > 1 else FOLDER):
    print(written)
