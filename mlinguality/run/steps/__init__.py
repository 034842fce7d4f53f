"""The runner's stage steps, one module each: read the inputs, call the library, write the files.

Each step reads only the run folder (and, for collect, ablate and steer, the model and corpus)
and writes exactly the outputs its declaration in :mod:`mlinguality.run.stages` lists, so any
finished step can be reused from the folder or the stage cache. The science lives in the
library modules; nothing here computes a number of its own. Under torchrun, collect and ablate
hand their work to the ranks (:mod:`mlinguality.run.team`); the files written are the same.
"""
