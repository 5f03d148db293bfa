"""The command line: parses, calls the library, prints. Heavy imports live inside the commands."""
