import sys

from jaxscratch.runs.cli import main

sys.exit(main())
