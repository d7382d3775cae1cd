"""Who may call what: scoped API tokens and the throttle on failed attempts."""
