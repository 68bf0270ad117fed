"""Book support: helpers used by the chapters, kept apart from the core (which never imports them)."""
