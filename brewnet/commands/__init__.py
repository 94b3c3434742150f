"""The ``brewnet`` command: :mod:`.main` parses the verb and runs it; one module per verb
(``add_arguments(parser)``, ``run(args)``); :mod:`.shared_flags` holds what several verbs share.
A verb imports shared_flags and the library, never another verb; it imports the library inside
``run`` so that ``brewnet --help`` and argument errors answer without importing torch."""
