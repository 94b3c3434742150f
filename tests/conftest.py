"""Suite-wide: pytest imports this file from tests/, which puts tests/ on sys.path, so that test
modules in every folder import the shared helpers by name (``numeric``, ``pylayers``,
``pycaffe.nets``) and nets find the Python layers they name (``pycaffe.user_layers``)."""
