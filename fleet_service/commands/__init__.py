"""Commands to units: the state machine, durable dispatch, and its database writes."""
