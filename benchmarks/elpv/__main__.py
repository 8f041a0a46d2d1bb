"""`python -m benchmarks.elpv eval-elpv ...` from the repository root."""

from benchmarks.elpv.cli import main

main()
