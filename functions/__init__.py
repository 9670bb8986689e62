"""The Lambda entry points: one module per function, each a few lines over ``tether``.

Handler strings are ``functions.<name>.lambda_handler``. The deployment bundle is
this folder plus the installed ``tether`` package and its runtime dependencies.
"""
