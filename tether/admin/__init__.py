"""The operators' API, its live page, and what the ``tether`` commands share with them.

``tether.admin.app`` is the FastAPI application (the ``admin`` extra); the modules it
builds on (``operations``, ``cursor``, ``schemas``, ``chart``) need only tether's own
dependencies, so the command line uses them without FastAPI.
"""
