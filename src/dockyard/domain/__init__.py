"""Pure domain rules: nothing here imports the rest of dockyard or does I/O."""
