"""Who may do what: operator tokens, users, web sessions, claim tokens, rate limits, audit."""
