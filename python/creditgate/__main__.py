"""`python -m creditgate`: the same command line as the `creditgate` script."""

from creditgate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
