"""The event mesh: Dapr's building blocks as CloudEvents over the broker you already run."""
