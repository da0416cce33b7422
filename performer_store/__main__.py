"""`python -m performer_store` is `pstore`."""

from .cli import main

main()
