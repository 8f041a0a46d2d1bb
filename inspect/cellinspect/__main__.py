"""`python -m cellinspect`: the same CLI as the `cellinspect` command (tests run it this way)."""

from cellinspect.cli import main

main()
