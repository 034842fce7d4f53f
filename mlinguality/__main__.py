"""``python -m mlinguality`` is the ``mlinguality`` command (also under ``torchrun -m``)."""

from mlinguality.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
