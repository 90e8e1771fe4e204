"""``python -m ntmdist``: the command line of :mod:`ntmdist.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
