"""Use cases over the database and backend interfaces. Each function is keyword-only and
owns its transaction."""
