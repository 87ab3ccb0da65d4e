"""The ``deeplab`` application: the command line and what only it needs.

:mod:`.cli` (the only module that parses arguments), :mod:`.files` (folders in, label
PNGs out), :mod:`.batch` (many images: segment and evaluate jobs), :mod:`.workers` (where they
run: this process, a local pool, a Dask cluster), :mod:`.imageio` (reading images, writing label
maps), :mod:`.evaluate`
(VOC's confusion matrix and mIoU), :mod:`.refine` (``deeplab crf``), :mod:`.search`
(``deeplab crf-search``: the CRF's parameters chosen on validation images), :mod:`.demo`,
:mod:`.environment` (``deeplab info``) and :mod:`.selfcheck` (``deeplab check``).
It sits on top: it uses :mod:`nets.deeplab`, :mod:`nets.engine` and below, and nothing
imports it.
"""
