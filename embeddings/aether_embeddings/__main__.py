"""`python -m aether_embeddings` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
