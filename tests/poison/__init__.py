"""Real-broker poison tests (issue #12): no message stops a consumer, on every broker."""
