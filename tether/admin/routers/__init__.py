"""One router per resource: health, sessions, users, stats, sweep, and the live page."""
