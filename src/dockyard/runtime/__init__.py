"""Running releases: the runtime interface, its implementations, the boot check and the
supervisor that owns every app's running formation."""
