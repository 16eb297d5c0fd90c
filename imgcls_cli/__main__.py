"""`python -m imgcls_cli ...` (also what torchrun launches: `torchrun -m imgcls_cli train ...`)."""

from .cli.app import run

if __name__ == "__main__":
    run()
