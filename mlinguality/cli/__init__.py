"""The command line (``mlinguality``, ``python -m mlinguality``): argparse front ends over
:mod:`mlinguality.run` and the stages. It imports them; nothing imports it."""
