"""Taking over a ``conversation_sessions`` table tether did not create, in place:
``tether adopt --check`` (``inspect``: a read-only report), ``--apply`` (``apply``:
every row kept and read by written rules, no write blocked for more than about a
second, the old server still working), ``--finish`` (``finish``: the final, generated
columns, once the old writers are gone).

The SQL lives in ``tether/adopt/sql``, apart from the migrations: a fresh install
never runs it."""
