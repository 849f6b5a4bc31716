"""posemu emulator: the terminal (state machine, journal, host link), the host simulator, CLI and UI."""
