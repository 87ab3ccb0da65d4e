"""A pydensecrf-compatible facade: switch by changing the import.

    import pydensecrf.densecrf as dcrf          ->  import crf.compat.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax  ->  from crf.compat.utils import unary_from_softmax

pydensecrf's conventions are kept, quirks included (see :mod:`crf.compat.densecrf`);
arrays of other real dtypes or layouts are converted instead of refused.
"""
from crf.compat import densecrf, utils
from crf.compat.densecrf import (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL, NO_NORMALIZATION,
                                 NORMALIZE_AFTER, NORMALIZE_BEFORE, NORMALIZE_SYMMETRIC, DenseCRF,
                                 DenseCRF2D)

__all__ = ["CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL", "NO_NORMALIZATION", "NORMALIZE_AFTER",
           "NORMALIZE_BEFORE", "NORMALIZE_SYMMETRIC", "DenseCRF", "DenseCRF2D", "densecrf", "utils"]
