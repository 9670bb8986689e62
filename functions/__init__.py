"""tether: keeps the session table of a serverless WebSocket application true.

Each top-level module here (connect, disconnect, message, sweep, session_ended)
is one Lambda entry point exposing ``lambda_handler``; ``core`` holds the domain
code they share and ``devtools`` what runs only on a laptop or in CI.
"""
