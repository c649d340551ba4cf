"""``python -m erasekit``: the command line."""

from erasekit.cli import main

if __name__ == "__main__":
    main()
