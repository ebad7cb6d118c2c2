"""The `data` stage: its config (which worlds, at what size, the user's corpus) and the stage itself."""
