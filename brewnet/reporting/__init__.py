"""How far a run is and what it measured, for people and for programs.

- :mod:`.progress_bar` — ``TerminalProgress``: brewnet train's one-line bar on a terminal.
- :mod:`.task_progress` — ``Progress``: a counted task's progress (dataset create, classify): a
  bar on a terminal, periodic lines otherwise, and the progress file when one is set.
- :mod:`.progress_file` — ``$BREWNET_PROGRESS_FILE``: progress as JSON lines for the server.
- :mod:`.metrics` — ``MetricsWriter``/``read_metrics``: training metrics as JSON lines.
- :mod:`.json_lines` — the append-only JSON-lines files both of those are.
- :mod:`.caffe_log` — numbers as Caffe's log prints them.

Imports nothing else of brewnet (the standard library only), so every floor may use it.
"""
