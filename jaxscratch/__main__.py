import sys

from jaxscratch.cli import main

sys.exit(main())
