"""Jobs: their states, their directories of readable files, the command lines they run."""
