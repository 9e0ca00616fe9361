"""`python -m kolmogorov_tokenizers {encode,decode,analyze} ...`: see kolmogorov_tokenizers/cli.py."""
import sys

from kolmogorov_tokenizers.cli import main

sys.exit(main())
