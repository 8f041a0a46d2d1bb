"""Model lifecycle: the registry, promotion and rollback, and shadow runs of candidates."""
