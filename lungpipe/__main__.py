"""``python -m lungpipe``: the ``lungpipe`` command line (what the installed script runs)."""

from lungpipe.cli import main

if __name__ == "__main__":
    main()
