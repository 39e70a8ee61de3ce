"""The `fleet` console script: one entry point whose sub-commands start each part."""
