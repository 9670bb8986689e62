"""The Lambda entry points: one module per function, each a few lines over ``tether``.

Handler strings are ``functions.<name>.lambda_handler``. The deployment bundle is
this folder plus the installed ``tether`` package and its runtime dependencies.
"""

from tether.aws import snapstart

# With SnapStart, a restored snapshot forgets the connection and secrets it was taken with.
snapstart.register()
