"""``python -m medsr`` (also what ``torchrun -m medsr train ...`` runs)."""

from medsr.cli import main

main()
